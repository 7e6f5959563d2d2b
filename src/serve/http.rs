//! HTTP/1.1 with keep-alive (hyper): predictions by id, batches, versions,
//! health and Prometheus metrics.
//!
//! | route | answer |
//! | --- | --- |
//! | `GET /v1/predictions/{id}[?version=N]` | 200 the `herd store get --json` object; 404 `{"error"}` naming the version read |
//! | `POST /v1/predictions:batchGet` | body `{"ids": [...], "version"?: N}` -> `{"predictions": [object or null, ...]}`; 404 when version N does not exist |
//! | `GET /v1/versions` | `herd store versions --json` |
//! | `GET /healthz` | 200 `{"status": "ok", "live": N}`; 503 while nothing is live |
//! | `GET /metrics` | Prometheus text |
//!
//! An id is a literal entity id (percent-decoded): unlike a RESP key it has
//! no `vN:` or `{prefix}:` shapes, so every string id can be read here; the
//! version comes only from `?version=` or `"version"`.
//!
//! With a password set every route but `/healthz` needs
//! `Authorization: Bearer PASSWORD` (401 otherwise). A store that does not
//! exist answers 503 naming it; an answer larger than [`MAX_VALUE_BYTES`]
//! 413.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use hyper::body::{Frame, Incoming, SizeHint};
use hyper::header::{self, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpStream;

use super::listen::Deadlines;
use super::metrics::{Route, StoreState};
use super::reader::{Answer, Batch, Key, ReadError};
use super::{
    MAX_BODY_BYTES, MAX_HEAD_BYTES, MAX_KEYS, REQUEST_TIMEOUT, Shared, WRITE_TIMEOUT, now_secs,
};

/// hyper's read buffer: a head of [`MAX_HEAD_BYTES`] plus body chunks.
const READ_BUFFER: usize = 64 << 10;

type Reply = Response<Body>;

/// A batchGet reply is written out in pieces of about this many bytes, each
/// made when hyper can take it: a client that does not read holds up the
/// making of the rest instead of making the server hold all of it.
pub(crate) const REPLY_CHUNK_BYTES: usize = 64 << 10;

/// A response body: one piece, or a batchGet reply made piece by piece from
/// the values its read gathered. A batch's body holds its place among
/// [`super::MAX_BATCHES_IN_FLIGHT`] until its last piece is made, so what
/// unread replies hold is at most [`super::MAX_VALUE_BYTES`] of gathered
/// values per batch and [`REPLY_CHUNK_BYTES`] (plus hyper's write buffer) of
/// JSON per connection.
pub(crate) struct Body {
    data: Option<Bytes>,
    batch: Option<Box<BatchReply>>,
    permit: Option<tokio::sync::OwnedSemaphorePermit>,
}

/// The answers of a batchGet, written as `{"predictions":[...]}`.
struct BatchReply {
    batch: Batch,
    /// The answer written next.
    next: usize,
    now: u64,
}

impl BatchReply {
    /// The next piece; the last one closes the JSON.
    fn piece(&mut self) -> Vec<u8> {
        let n = self.batch.answers.len();
        let mut out = Vec::with_capacity(REPLY_CHUNK_BYTES + 4096);
        if self.next == 0 {
            out.extend_from_slice(b"{\"predictions\":[");
        }
        while self.next < n && out.len() < REPLY_CHUNK_BYTES {
            if self.next > 0 {
                out.push(b',');
            }
            if !self.batch.write_json(self.next, self.now, &mut out) {
                out.extend_from_slice(b"null");
            }
            self.next += 1;
        }
        if self.next == n {
            out.extend_from_slice(b"]}");
        }
        out
    }

    fn done(&self) -> bool {
        self.next == self.batch.answers.len()
    }
}

impl Body {
    fn new(data: impl Into<Bytes>) -> Body {
        Body {
            data: Some(data.into()),
            batch: None,
            permit: None,
        }
    }

    fn batch(batch: Batch, now: u64, permit: tokio::sync::OwnedSemaphorePermit) -> Body {
        Body {
            data: None,
            batch: Some(Box::new(BatchReply {
                batch,
                next: 0,
                now,
            })),
            permit: Some(permit),
        }
    }
}

impl hyper::body::Body for Body {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if let Some(reply) = self.batch.as_mut() {
            let piece = reply.piece();
            if reply.done() {
                // The gathered values and the batch's place go now, not when
                // the client has taken the last piece.
                self.batch = None;
                self.permit = None;
            }
            return std::task::Poll::Ready(Some(Ok(Frame::data(piece.into()))));
        }
        std::task::Poll::Ready(self.data.take().map(|d| Ok(Frame::data(d))))
    }

    fn is_end_stream(&self) -> bool {
        self.data.is_none() && self.batch.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        match (&self.data, &self.batch) {
            // A batch's length is known once written: chunked.
            (_, Some(_)) => SizeHint::default(),
            (d, None) => SizeHint::with_exact(d.as_ref().map_or(0, |d| d.len() as u64)),
        }
    }
}

/// Serves one HTTP connection (any number of keep-alive requests).
pub(crate) async fn serve(stream: TcpStream, shared: Arc<Shared>) {
    let io = TokioIo::new(Deadlines::new(stream, shared.idle_timeout, WRITE_TIMEOUT));
    let handler = shared.clone();
    let svc = service_fn(move |req| {
        let shared = handler.clone();
        async move { Ok::<_, Infallible>(handle(req, &shared).await) }
    });
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(REQUEST_TIMEOUT)
        .max_header_size(MAX_HEAD_BYTES)
        .max_buf_size(READ_BUFFER)
        .keep_alive(true);
    if let Err(e) = builder.serve_connection(io, svc).await {
        if e.is_timeout() || is_io_timeout(&e) {
            shared.metrics.timed_out();
        } else if e.is_parse() || e.is_parse_too_large() {
            shared.metrics.protocol_error();
        }
    }
}

fn is_io_timeout(e: &hyper::Error) -> bool {
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            return io.kind() == std::io::ErrorKind::TimedOut;
        }
        source = s.source();
    }
    false
}

fn json_reply(status: StatusCode, body: impl Into<Bytes>) -> Reply {
    let mut r = Response::new(Body::new(body));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

fn error_reply(status: StatusCode, message: &str) -> Reply {
    json_reply(status, serde_json::json!({ "error": message }).to_string())
}

fn read_error(e: &ReadError) -> Reply {
    let status = match e {
        ReadError::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        ReadError::NoVersion(_) => {
            return error_reply(
                StatusCode::NOT_FOUND,
                &format!("{e} (see GET /v1/versions)"),
            );
        }
        ReadError::Store(crate::store::Error::NoStore { .. }) => StatusCode::SERVICE_UNAVAILABLE,
        ReadError::Store(_) => StatusCode::INTERNAL_SERVER_ERROR,
    };
    error_reply(status, &e.to_string())
}

async fn handle(req: Request<Incoming>, shared: &Shared) -> Reply {
    let started = Instant::now();
    let (route, reply) = route(req, shared).await;
    shared
        .metrics
        .http(route, reply.status().as_u16(), started.elapsed());
    reply
}

fn authorized(req: &Request<Incoming>, shared: &Shared) -> bool {
    if !shared.needs_auth() {
        return true;
    }
    req.headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| bearer_token(v.as_bytes()))
        .is_some_and(|token| shared.password_matches(token))
}

/// The token of `Bearer TOKEN`; the scheme's name is case-insensitive
/// (RFC 7235).
fn bearer_token(value: &[u8]) -> Option<&[u8]> {
    let (scheme, rest) = value.split_at_checked(6)?;
    if !scheme.eq_ignore_ascii_case(b"bearer") || !rest.starts_with(b" ") {
        return None;
    }
    Some(rest.trim_ascii_start())
}

fn method_not_allowed(allow: &'static str) -> Reply {
    let mut r = error_reply(
        StatusCode::METHOD_NOT_ALLOWED,
        &format!("this route takes {allow}"),
    );
    r.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allow));
    r
}

async fn route(req: Request<Incoming>, shared: &Shared) -> (Route, Reply) {
    const PREDICTIONS: &str = "/v1/predictions/";
    let path = req.uri().path().to_string();
    let route = match path.as_str() {
        "/healthz" => Route::Healthz,
        "/metrics" => Route::Metrics,
        "/v1/versions" => Route::Versions,
        "/v1/predictions:batchGet" => Route::BatchGet,
        p if p.starts_with(PREDICTIONS) && p.len() > PREDICTIONS.len() => Route::Prediction,
        _ => Route::Other,
    };
    if route != Route::Healthz && !authorized(&req, shared) {
        let mut r = error_reply(
            StatusCode::UNAUTHORIZED,
            "this server needs Authorization: Bearer <HERD_SERVE_PASSWORD>",
        );
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"herd\""),
        );
        return (route, r);
    }
    let get = req.method() == Method::GET || req.method() == Method::HEAD;
    let reply = match route {
        Route::Healthz if get => healthz(shared),
        Route::Metrics if get => metrics(shared),
        Route::Versions if get => versions(shared),
        Route::Prediction if get => {
            let query = req.uri().query().unwrap_or("").to_string();
            prediction(shared, &path[PREDICTIONS.len()..], &query)
        }
        Route::BatchGet if req.method() == Method::POST => batch_get(req, shared).await,
        Route::BatchGet => method_not_allowed("POST"),
        Route::Other => error_reply(
            StatusCode::NOT_FOUND,
            &format!(
                "no route {path}; routes: GET /v1/predictions/{{id}}[?version=N], POST /v1/predictions:batchGet, GET /v1/versions, GET /healthz, GET /metrics"
            ),
        ),
        _ => method_not_allowed("GET"),
    };
    (route, reply)
}

fn healthz(shared: &Shared) -> Reply {
    match shared.reader.live_rows() {
        Ok(Some((live, rows))) => json_reply(
            StatusCode::OK,
            serde_json::json!({"status": "ok", "live": live, "rows": rows}).to_string(),
        ),
        Ok(None) => json_reply(
            StatusCode::SERVICE_UNAVAILABLE,
            serde_json::json!({"status": "no live version", "live": null}).to_string(),
        ),
        Err(e) => json_reply(
            StatusCode::SERVICE_UNAVAILABLE,
            serde_json::json!({"status": "unavailable", "error": e.to_string()}).to_string(),
        ),
    }
}

fn metrics(shared: &Shared) -> Reply {
    let state = match shared.reader.live_rows() {
        Ok(live) => StoreState {
            live: live.map(|(v, _)| v),
            rows: live.map(|(_, r)| r),
            available: true,
        },
        Err(_) => StoreState {
            live: None,
            rows: None,
            available: false,
        },
    };
    let text = shared.metrics.render(&state, shared.started.elapsed());
    let mut r = Response::new(Body::new(text));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4"),
    );
    r
}

fn versions(shared: &Shared) -> Reply {
    let listing = shared.reader.store().and_then(|store| {
        store.snapshot(|snap| Ok(crate::store::versions_json(snap.live()?, &snap.records()?)))
    });
    match listing {
        Ok(v) => json_reply(StatusCode::OK, v.to_string()),
        Err(e) => read_error(&ReadError::Store(e)),
    }
}

/// Decodes `%XX` escapes; `None` when one is malformed.
fn percent_decode(s: &str) -> Option<Vec<u8>> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    Some(out)
}

/// The `version` query parameter.
fn version_param(query: &str) -> Result<Option<u64>, Box<Reply>> {
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        if k == "version" {
            return v.parse().map(Some).map_err(|_| {
                Box::new(error_reply(
                    StatusCode::BAD_REQUEST,
                    &format!("version must be a whole number, got '{v}'"),
                ))
            });
        }
    }
    Ok(None)
}

fn prediction(shared: &Shared, raw_id: &str, query: &str) -> Reply {
    let Some(id) = percent_decode(raw_id) else {
        return error_reply(
            StatusCode::BAD_REQUEST,
            &format!("id '{raw_id}' has a malformed %-escape"),
        );
    };
    let version = match version_param(query) {
        Ok(v) => v,
        Err(r) => return *r,
    };
    let key = Key::Entity { version, id: &id };
    let mut held = None;
    if let Ok(true) = shared
        .reader
        .read_held(key, now_secs(), |json| held = Some(json.to_vec()))
    {
        return json_reply(StatusCode::OK, held.unwrap_or_default());
    }
    let mut batch = Batch::default();
    if let Err(e) = shared.reader.read_ids(version, [id.as_slice()], &mut batch) {
        return read_error(&e);
    }
    let shown = String::from_utf8_lossy(&id);
    match &batch.answers[0] {
        Answer::Hit(_) => {
            let mut body = Vec::with_capacity(4096);
            batch.write_json(0, now_secs(), &mut body);
            json_reply(StatusCode::OK, body)
        }
        // Literal ids never name the live pointer; a missing version is
        // refused by `read_ids`.
        Answer::Live(_) | Answer::NoVersion | Answer::Missing => {
            let which = match version {
                Some(v) => format!("version {v}"),
                None => match batch.live {
                    Some(v) => format!("the live version ({v})"),
                    None => "the store: nothing is live yet".to_string(),
                },
            };
            error_reply(
                StatusCode::NOT_FOUND,
                &format!("no prediction for id '{shown}' in {which}"),
            )
        }
    }
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchGet {
    ids: Vec<serde_json::Value>,
    #[serde(default)]
    version: Option<u64>,
}

async fn batch_get(req: Request<Incoming>, shared: &Shared) -> Reply {
    let body = match Limited::new(req.into_body(), MAX_BODY_BYTES)
        .collect()
        .await
    {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some()
            {
                return error_reply(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    &format!("the body is larger than {} KiB", MAX_BODY_BYTES >> 10),
                );
            }
            return error_reply(StatusCode::BAD_REQUEST, &format!("reading the body: {e}"));
        }
    };
    let request: BatchGet = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return error_reply(
                StatusCode::BAD_REQUEST,
                &format!("expected {{\"ids\": [...], \"version\"?: N}}: {e}"),
            );
        }
    };
    if request.ids.len() > MAX_KEYS {
        return error_reply(
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!(
                "{} ids; a batch holds at most {MAX_KEYS}",
                request.ids.len()
            ),
        );
    }
    let mut ids = Vec::with_capacity(request.ids.len());
    for (i, id) in request.ids.iter().enumerate() {
        let text = match id {
            serde_json::Value::String(s) => s.clone(),
            serde_json::Value::Number(n) if n.is_u64() => n.to_string(),
            other => {
                return error_reply(
                    StatusCode::BAD_REQUEST,
                    &format!("ids[{i}] is {other}; ids are strings or whole numbers"),
                );
            }
        };
        ids.push(text);
    }
    let Ok(permit) = shared.batches.clone().acquire_owned().await else {
        return error_reply(
            StatusCode::SERVICE_UNAVAILABLE,
            "the server is shutting down",
        );
    };
    let mut batch = Batch::default();
    if let Err(e) = shared.reader.read_ids(
        request.version,
        ids.iter().map(String::as_bytes),
        &mut batch,
    ) {
        return read_error(&e);
    }
    let mut reply = Response::new(Body::batch(batch, now_secs(), permit));
    reply.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    reply
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_escapes_decode_and_bad_ones_are_refused() {
        assert_eq!(percent_decode("user%2F7%20x").unwrap(), b"user/7 x");
        assert!(percent_decode("a%2").is_none());
        assert!(percent_decode("a%zz").is_none());
    }

    #[test]
    fn the_bearer_scheme_is_case_insensitive() {
        assert_eq!(bearer_token(b"Bearer s3cret"), Some(&b"s3cret"[..]));
        assert_eq!(bearer_token(b"bearer s3cret"), Some(&b"s3cret"[..]));
        assert_eq!(bearer_token(b"BEARER  s3cret"), Some(&b"s3cret"[..]));
        assert_eq!(bearer_token(b"Bearers3cret"), None);
        assert_eq!(bearer_token(b"Basic s3cret"), None);
        assert_eq!(bearer_token(b"Bear"), None);
    }

    #[test]
    fn version_parameter() {
        assert_eq!(version_param("version=7").ok().flatten(), Some(7));
        assert_eq!(version_param("x=1&version=12").ok().flatten(), Some(12));
        assert_eq!(version_param("").ok().flatten(), None);
        assert!(version_param("version=seven").is_err());
    }
}
