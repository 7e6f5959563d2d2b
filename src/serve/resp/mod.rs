//! The Redis protocol (RESP2, and RESP3 after `HELLO 3`): a bounded parser
//! and the commands Redis clients send to read keys.
//!
//! [`parse`] reads requests under their limits, [`reply`] writes answers,
//! this module runs a connection and answers the commands that read keys,
//! [`setup`] the commands clients send to set up a connection.
//!
//! Commands: `GET`, `MGET`, `EXISTS`, `TTL`, `PTTL`, `PING`, `ECHO`, `INFO`,
//! `DBSIZE`, `HELLO`, `AUTH`, `QUIT`, `RESET`, and the set-up commands of
//! redis-cli, redis-benchmark and redis-py (`CLIENT SETINFO|SETNAME|GETNAME|ID`,
//! `SELECT 0`, `COMMAND [COUNT|DOCS|INFO]`, `CONFIG GET`). Anything else is
//! answered `-ERR unknown command`, writes `-READONLY`.

mod parse;
mod reply;
mod setup;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use super::listen;
use super::metrics::Command;
use super::reader::{Answer, Batch};
use super::{MAX_KEYS, REQUEST_TIMEOUT, Shared, WRITE_TIMEOUT, now_secs};
use parse::{Parser, Step};
use reply::Reply;

/// Replies are written out once this many bytes are pending.
const FLUSH_BYTES: usize = 64 << 10;
/// Buffers above these capacities are freed between commands, so an idle
/// connection holds little.
const KEEP_READ_BUFFER: usize = 8 << 10;
const KEEP_WRITE_BUFFER: usize = 16 << 10;
/// Bytes read at once.
const READ_CHUNK: usize = 4 << 10;

/// Connection ids for `CLIENT ID`.
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// What a connection knows about its client.
struct Session {
    id: u64,
    resp3: bool,
    authed: bool,
    name: Option<Vec<u8>>,
}

enum Flow {
    Continue,
    Close,
}

/// The state of one connection.
struct Conn<'s> {
    shared: &'s Shared,
    stream: TcpStream,
    out: Vec<u8>,
    batch: Batch,
    session: Session,
}

/// Serves one RESP connection until the client leaves, breaks a limit or
/// times out.
pub(crate) async fn serve(stream: TcpStream, shared: &Shared) {
    let mut conn = Conn {
        shared,
        stream,
        out: Vec::new(),
        batch: Batch::default(),
        session: Session {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            resp3: false,
            authed: !shared.needs_auth(),
            name: None,
        },
    };
    let mut buf: Vec<u8> = Vec::new();
    let mut parser = Parser::default();
    let mut started: Option<tokio::time::Instant> = None;
    loop {
        // Answer every whole command buffered.
        let mut at = 0;
        loop {
            match parser.step(&buf[at..]) {
                Step::More => break,
                Step::Bad(why) => {
                    shared.metrics.protocol_error();
                    Reply {
                        out: &mut conn.out,
                        resp3: conn.session.resp3,
                    }
                    .error(&format!("ERR {why}"));
                    if conn.flush().await.is_ok() {
                        listen::linger(&mut conn.stream).await;
                    }
                    return;
                }
                Step::Command(len) => {
                    let cmd = &buf[at..at + len];
                    // Commands of a few arguments (nearly all) need no
                    // allocation.
                    let mut few: [&[u8]; 4] = [&[]; 4];
                    let many: Vec<&[u8]>;
                    let n = parser.args.len();
                    let args: &[&[u8]] = if n <= few.len() {
                        for (i, slot) in few.iter_mut().take(n).enumerate() {
                            *slot = parser.arg(cmd, i);
                        }
                        &few[..n]
                    } else {
                        many = (0..n).map(|i| parser.arg(cmd, i)).collect();
                        &many
                    };
                    let flow = if args.is_empty() {
                        Flow::Continue
                    } else {
                        conn.execute(args).await
                    };
                    at += len;
                    parser.reset();
                    if matches!(flow, Flow::Close) {
                        let _ = conn.flush().await;
                        return;
                    }
                    if conn.out.len() >= FLUSH_BYTES && conn.flush().await.is_err() {
                        return;
                    }
                }
            }
        }
        buf.drain(..at);
        if !conn.out.is_empty() && conn.flush().await.is_err() {
            return;
        }
        if buf.is_empty() && buf.capacity() > KEEP_READ_BUFFER {
            buf = Vec::new();
        }
        // Wait for more: a started command must finish within the request
        // timeout, a quiet connection closes after the idle timeout.
        let deadline = if parser.in_progress() || !buf.is_empty() {
            *started.get_or_insert_with(|| tokio::time::Instant::now() + REQUEST_TIMEOUT)
        } else {
            started = None;
            tokio::time::Instant::now() + shared.idle_timeout
        };
        match conn.read_more(&mut buf, deadline).await {
            Ok(true) => {}
            Ok(false) => return,
            Err(()) => {
                shared.metrics.timed_out();
                return;
            }
        }
    }
}

impl Conn<'_> {
    async fn flush(&mut self) -> Result<(), ()> {
        let write = tokio::time::timeout(WRITE_TIMEOUT, self.stream.write_all(&self.out)).await;
        self.out.clear();
        if self.out.capacity() > KEEP_WRITE_BUFFER {
            self.out = Vec::new();
        }
        match write {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(()),
            Err(_) => {
                self.shared.metrics.timed_out();
                Err(())
            }
        }
    }

    /// Reads what the client sent next into `buf`. `Ok(false)`: the client
    /// closed; `Err`: the deadline passed.
    async fn read_more(
        &mut self,
        buf: &mut Vec<u8>,
        deadline: tokio::time::Instant,
    ) -> Result<bool, ()> {
        loop {
            // Idle connections hold no buffer until bytes arrive.
            match tokio::time::timeout_at(deadline, self.stream.readable()).await {
                Err(_) => return Err(()),
                Ok(Err(_)) => return Ok(false),
                Ok(Ok(())) => {}
            }
            buf.reserve(READ_CHUNK);
            match read_draining(&self.stream, buf) {
                Ok(0) => return Ok(false),
                Ok(_) => return Ok(true),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                Err(_) => return Ok(false),
            }
        }
    }

    fn reply(&mut self) -> Reply<'_> {
        Reply {
            out: &mut self.out,
            resp3: self.session.resp3,
        }
    }

    async fn execute(&mut self, args: &[&[u8]]) -> Flow {
        let started = Instant::now();
        let name = args[0];
        let is = |n: &str| name.eq_ignore_ascii_case(n.as_bytes());
        let kind = if is("get") {
            Command::Get
        } else if is("mget") {
            Command::Mget
        } else if is("exists") {
            Command::Exists
        } else if is("ttl") || is("pttl") {
            Command::Ttl
        } else {
            Command::Other
        };
        let before = self.out.len();
        let flow = self.dispatch(args).await;
        // Every reply but MGET's is one value; an error is one line starting
        // with '-'. (An MGET flushed mid-way counts as no error.)
        let error = self.out.get(before) == Some(&b'-');
        self.shared.metrics.resp(kind, error, started.elapsed());
        flow
    }

    fn arity_error(&mut self, name: &[u8]) -> Flow {
        let name = String::from_utf8_lossy(name).to_lowercase();
        self.reply().error(&format!(
            "ERR wrong number of arguments for '{name}' command"
        ));
        Flow::Continue
    }

    async fn dispatch(&mut self, args: &[&[u8]]) -> Flow {
        let name = args[0];
        let is = |n: &str| name.eq_ignore_ascii_case(n.as_bytes());
        if !(self.session.authed || is("auth") || is("hello") || is("quit")) {
            self.reply().error("NOAUTH Authentication required.");
            return Flow::Continue;
        }
        if is("get") {
            if args.len() != 2 {
                return self.arity_error(name);
            }
            self.get(args[1]);
        } else if is("mget") {
            if args.len() < 2 {
                return self.arity_error(name);
            }
            return self.mget(&args[1..]).await;
        } else if is("exists") {
            if args.len() < 2 {
                return self.arity_error(name);
            }
            self.exists(&args[1..]).await;
        } else if is("ttl") || is("pttl") {
            if args.len() != 2 {
                return self.arity_error(name);
            }
            self.ttl(args[1], is("pttl"));
        } else if is("ping") {
            match args.len() {
                1 => self.reply().simple("PONG"),
                2 => self.reply().bulk(args[1]),
                _ => return self.arity_error(name),
            }
        } else if is("echo") {
            if args.len() != 2 {
                return self.arity_error(name);
            }
            self.reply().bulk(args[1]);
        } else if is("quit") {
            self.reply().simple("OK");
            return Flow::Close;
        } else if is("reset") {
            self.session.resp3 = false;
            self.session.authed = !self.shared.needs_auth();
            self.session.name = None;
            self.reply().simple("RESET");
        } else if is("auth") {
            self.auth(args);
        } else if is("hello") {
            self.hello(args);
        } else if is("select") {
            if args.len() != 2 {
                return self.arity_error(name);
            }
            if args[1] == b"0" {
                self.reply().simple("OK");
            } else {
                self.reply()
                    .error("ERR DB index is out of range (herd serve has one database, 0)");
            }
        } else if is("client") {
            self.client(args);
        } else if is("command") {
            self.command(args);
        } else if is("config") {
            self.config(args);
        } else if is("info") {
            self.info();
        } else if is("dbsize") {
            if args.len() != 1 {
                return self.arity_error(name);
            }
            let rows = self
                .shared
                .reader
                .live_rows()
                .ok()
                .flatten()
                .map_or(0, |(_, r)| r);
            self.reply().int(rows as i64);
        } else if [
            "set", "del", "unlink", "mset", "setex", "expire", "flushdb", "flushall",
        ]
        .iter()
        .any(|c| is(c))
        {
            self.reply().error(
                "READONLY herd serve answers reads only; predictions are written by `herd run`",
            );
        } else {
            let mut msg = format!(
                "ERR unknown command '{}', with args beginning with: ",
                lossy(name, 64)
            );
            for a in args.iter().skip(1).take(8) {
                msg.push_str(&format!("'{}' ", lossy(a, 64)));
            }
            self.reply().error(&msg);
        }
        Flow::Continue
    }

    /// Reads `keys` in one transaction; the error reply is written on failure.
    fn read(&mut self, keys: &[&[u8]]) -> bool {
        let reader = &self.shared.reader;
        let outcome = reader.read(keys.iter().map(|k| reader.key(k)), &mut self.batch);
        match outcome {
            Ok(()) => true,
            Err(e) => {
                self.reply().error(&format!("ERR {e}"));
                false
            }
        }
    }

    /// Writes answer `i` as a GET reply.
    fn answer(&mut self, i: usize, now: u64) {
        match &self.batch.answers[i] {
            Answer::Hit(_) => {
                let batch = &self.batch;
                Reply {
                    out: &mut self.out,
                    resp3: self.session.resp3,
                }
                .bulk_with(|out| {
                    batch.write_json(i, now, out);
                });
            }
            Answer::Live(Some(v)) => {
                let text = v.to_string();
                self.reply().bulk(text.as_bytes());
            }
            Answer::Live(None) | Answer::Missing | Answer::NoVersion => self.reply().nil(),
        }
    }

    fn get(&mut self, key: &[u8]) {
        let now = now_secs();
        let reader = &self.shared.reader;
        let mut reply = Reply {
            out: &mut self.out,
            resp3: self.session.resp3,
        };
        if let Ok(true) = reader.read_held(reader.key(key), now, |json| reply.bulk(json)) {
            return;
        }
        if self.read(&[key]) {
            self.answer(0, now);
        }
        self.batch.shrink();
    }

    async fn mget(&mut self, keys: &[&[u8]]) -> Flow {
        if keys.len() > MAX_KEYS {
            self.reply().error(&format!(
                "ERR too many keys in MGET: {} (at most {MAX_KEYS})",
                keys.len()
            ));
            return Flow::Continue;
        }
        let _permit = self.shared.batches.acquire().await;
        if self.read(keys) {
            let now = now_secs();
            self.reply().array(keys.len());
            for i in 0..keys.len() {
                self.answer(i, now);
                if self.out.len() >= FLUSH_BYTES && self.flush().await.is_err() {
                    self.batch.shrink();
                    return Flow::Close;
                }
            }
        }
        self.batch.shrink();
        Flow::Continue
    }

    async fn exists(&mut self, keys: &[&[u8]]) {
        if keys.len() > MAX_KEYS {
            self.reply().error(&format!(
                "ERR too many keys in EXISTS: {} (at most {MAX_KEYS})",
                keys.len()
            ));
            return;
        }
        let _permit = if keys.len() > 1 {
            Some(self.shared.batches.acquire().await)
        } else {
            None
        };
        if self.read(keys) {
            let n = self
                .batch
                .answers
                .iter()
                .filter(|a| matches!(a, Answer::Hit(_) | Answer::Live(Some(_))))
                .count();
            self.reply().int(n as i64);
        }
        self.batch.shrink();
    }

    /// Seconds (or ms) until the prediction goes stale; 0 once stale, -1 for
    /// the live pointer (it never expires), -2 when missing.
    fn ttl(&mut self, key: &[u8], millis: bool) {
        if !self.read(&[key]) {
            return;
        }
        let n = match &self.batch.answers[0] {
            Answer::Live(Some(_)) => -1,
            Answer::Hit(_) => {
                let secs = self.batch.ttl_left(0, now_secs()).unwrap_or(0);
                let secs = i64::try_from(secs).unwrap_or(i64::MAX);
                if millis {
                    secs.saturating_mul(1000)
                } else {
                    secs
                }
            }
            _ => -2,
        };
        self.batch.shrink();
        self.reply().int(n);
    }
}

/// Reads what `stream` holds into `buf`'s spare room. A read that leaves
/// room unfilled emptied the socket's receive queue (epoll(7): a short read
/// of a stream socket means its input is exhausted), so the stream's
/// readiness is cleared as a failed read would clear it: the next wait goes
/// straight to the poller instead of first paying for a read that finds
/// nothing. The readiness is cleared as of before this read, so bytes that
/// arrive during it still wake the connection.
fn read_draining(stream: &TcpStream, buf: &mut Vec<u8>) -> std::io::Result<usize> {
    let room = buf.capacity() - buf.len();
    let mut got = None;
    let outcome = stream.try_io(tokio::io::Interest::READABLE, || {
        let n = stream.try_read_buf(buf)?;
        got = Some(n);
        if n > 0 && n < room {
            return Err(std::io::ErrorKind::WouldBlock.into());
        }
        Ok(n)
    });
    match (outcome, got) {
        (_, Some(n)) => Ok(n),
        (outcome, None) => outcome,
    }
}

fn lossy(b: &[u8], max: usize) -> String {
    let s = String::from_utf8_lossy(&b[..b.len().min(max)]);
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}
