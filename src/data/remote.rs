//! Inputs in object storage: the store for a URL, its part objects, and a
//! synchronous Parquet [`ChunkReader`] over them.
//!
//! The data room is synchronous (the coordinator calls it from blocking
//! sections, workers from their own threads), while `object_store` is async.
//! Requests therefore run on an IO runtime of this module's own, on its own
//! threads, and the caller waits on a channel: no `block_on` ever runs inside
//! someone else's runtime.
//!
//! A read fetches, before decoding, every byte range it will decode (the
//! projected column chunks of the row groups it touches) in one concurrent
//! request set; the footer is read with one request for the file's last
//! [`FOOTER_PREFETCH`] bytes. Anything the decoder asks for beyond that is
//! fetched on demand in [`READ_WINDOW`] pieces.
//!
//! Credentials come from the environment as each provider's tools read them:
//! `AWS_*` variables, then the shared `~/.aws/credentials` and `~/.aws/config`
//! files (profile `AWS_PROFILE`, else `default`), then the instance or
//! container role; `GOOGLE_*` variables and application default credentials;
//! `AZURE_*` variables. Never from the job file.

use std::io::Read;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt};
use object_store::path::Path as ObjectPath;
use object_store::{
    ClientOptions, GetOptions, OBJECT_STORE_COALESCE_DEFAULT, ObjectMeta, ObjectStore,
    ObjectStoreExt, ObjectStoreScheme, RetryConfig,
};
use parquet::file::reader::{ChunkReader, Length};

use super::parts::{self, PartRef, PartSource};
use super::{Error, Result};
use crate::config::Storage;

/// Bytes read from the end of a remote file to find its footer in one
/// request (larger footers cost one more).
pub const FOOTER_PREFETCH: u64 = 64 * 1024;
/// Bytes fetched at a time when the decoder reads past what was prefetched.
pub const READ_WINDOW: u64 = 256 * 1024;
/// Requests in flight at once while opening the parts of a dataset.
pub const OPEN_CONCURRENCY: usize = 16;
/// Attempts of a failed request, and the time after which none is retried.
pub const MAX_RETRIES: usize = 3;
pub const RETRY_TIMEOUT: Duration = Duration::from_secs(30);
/// Limits on one request.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);

/// Runs `future` on the IO runtime and waits for it on this thread.
pub(crate) fn block<F>(future: F) -> F::Output
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    let runtime = RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("herd-io")
            .enable_all()
            .build()
            .expect("cannot start the object-store IO threads")
    });
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    runtime.spawn(async move {
        let _ = tx.send(future.await);
    });
    rx.recv()
        .expect("the object-store IO runtime dropped a request")
}

/// One object of a remote dataset.
#[derive(Debug)]
pub(super) struct RemoteObject {
    store: Arc<dyn ObjectStore>,
    path: ObjectPath,
    size: u64,
    /// The object's URL, for messages.
    name: PathBuf,
    /// The version listed when the input was opened, as conditions every
    /// read carries (`If-Match` on the entity tag, else
    /// `If-Unmodified-Since`): an object rewritten since fails the read
    /// instead of mixing versions.
    version: GetOptions,
}

/// An object's identity as a listing shows it: size, entity tag and
/// modification time, one string (what `--resume` and a worker reading a
/// [`Segment`](super::Segment) compare).
pub fn object_identity(meta: &ObjectMeta) -> String {
    format!(
        "{} {} {}",
        meta.size,
        meta.e_tag.as_deref().unwrap_or("-"),
        meta.last_modified.timestamp_nanos_opt().unwrap_or(0)
    )
}

/// The conditions that ask for `meta`'s version of an object only.
fn version_of(meta: &ObjectMeta) -> GetOptions {
    GetOptions {
        if_match: meta.e_tag.clone(),
        if_unmodified_since: meta.e_tag.is_none().then_some(meta.last_modified),
        ..Default::default()
    }
}

/// A GET of `range` under `version`'s conditions.
fn ranged(version: &GetOptions, range: Range<u64>) -> GetOptions {
    GetOptions {
        range: Some(range.into()),
        ..version.clone()
    }
}

impl RemoteObject {
    fn error(&self, source: object_store::Error) -> Error {
        match source {
            object_store::Error::Precondition { .. } => Error::PartChanged {
                path: self.name.clone(),
                message: "changed in object storage (entity tag or modification time) after \
                          this reader listed it"
                    .into(),
            },
            source => Error::Storage {
                path: self.name.clone(),
                source: Box::new(source),
            },
        }
    }

    fn fetch(&self, range: Range<u64>) -> Result<Bytes> {
        let (store, path) = (self.store.clone(), self.path.clone());
        let options = ranged(&self.version, range);
        block(async move { store.get_opts(&path, options).await?.bytes().await })
            .map_err(|e| self.error(e))
    }

    /// Fetches `ranges` (concurrently, adjacent ones merged) and returns a
    /// reader that serves them from memory.
    pub(super) fn prefetch(self: &Arc<Self>, ranges: Vec<Range<u64>>) -> Result<Prefetched> {
        if ranges.is_empty() {
            return Ok(Prefetched {
                object: self.clone(),
                segments: Vec::new(),
            });
        }
        let (store, path) = (self.store.clone(), self.path.clone());
        let (wanted, version) = (ranges.clone(), self.version.clone());
        let bytes = block(async move {
            let fetch = |range: Range<u64>| {
                let (store, path) = (store.clone(), path.clone());
                let options = ranged(&version, range);
                async move { store.get_opts(&path, options).await?.bytes().await }
            };
            object_store::coalesce_ranges(&wanted, fetch, OBJECT_STORE_COALESCE_DEFAULT).await
        })
        .map_err(|e| self.error(e))?;
        let mut segments: Vec<(u64, Bytes)> = ranges
            .iter()
            .map(|r| r.start)
            .zip(bytes)
            .collect::<Vec<_>>();
        segments.sort_by_key(|s| s.0);
        Ok(Prefetched {
            object: self.clone(),
            segments,
        })
    }
}

/// For each object, a reader holding its last [`FOOTER_PREFETCH`] bytes,
/// fetched [`OPEN_CONCURRENCY`] at a time; in the order given.
pub(super) fn footers(objects: Vec<Arc<RemoteObject>>) -> Vec<Result<Prefetched>> {
    if objects.is_empty() {
        return Vec::new();
    }
    let fetched = block(async move {
        futures_util::stream::iter(objects.into_iter().map(|object| async move {
            let start = object.size.saturating_sub(FOOTER_PREFETCH);
            let options = ranged(&object.version, start..object.size);
            let bytes = match object.store.get_opts(&object.path, options).await {
                Ok(got) => got.bytes().await,
                Err(e) => Err(e),
            };
            (object, start, bytes)
        }))
        .buffered(OPEN_CONCURRENCY)
        .collect::<Vec<_>>()
        .await
    });
    fetched
        .into_iter()
        .map(|(object, start, bytes)| match bytes {
            Ok(bytes) => Ok(Prefetched {
                object,
                segments: vec![(start, bytes)],
            }),
            Err(e) => Err(object.error(e)),
        })
        .collect()
}

/// Byte ranges of one remote file held in memory, with the file behind them
/// for anything else.
pub(super) struct Prefetched {
    object: Arc<RemoteObject>,
    /// (first byte, bytes), sorted by first byte.
    segments: Vec<(u64, Bytes)>,
}

impl Prefetched {
    /// The held bytes from `start` to the end of the segment holding it.
    fn held_from(&self, start: u64) -> Option<Bytes> {
        let i = self.segments.partition_point(|s| s.0 <= start);
        let (first, bytes) = self.segments.get(i.checked_sub(1)?)?;
        let offset = (start - first) as usize;
        (offset < bytes.len()).then(|| bytes.slice(offset..))
    }
}

fn external(e: Error) -> parquet::errors::ParquetError {
    parquet::errors::ParquetError::External(Box::new(e))
}

impl Length for Prefetched {
    fn len(&self) -> u64 {
        self.object.size
    }
}

impl ChunkReader for Prefetched {
    type T = Window;

    fn get_read(&self, start: u64) -> parquet::errors::Result<Window> {
        Ok(Window {
            object: self.object.clone(),
            position: start,
            buffer: self.held_from(start).unwrap_or_default(),
        })
    }

    fn get_bytes(&self, start: u64, length: usize) -> parquet::errors::Result<Bytes> {
        if let Some(held) = self.held_from(start)
            && held.len() >= length
        {
            return Ok(held.slice(..length));
        }
        let end = start.saturating_add(length as u64);
        if end > self.object.size {
            return Err(parquet::errors::ParquetError::EOF(format!(
                "{}: bytes {start}..{end} asked for, but the object has {}",
                self.object.name.display(),
                self.object.size
            )));
        }
        self.object.fetch(start..end).map_err(external)
    }
}

/// A reader from one position of a remote file: held bytes first, then
/// [`READ_WINDOW`]-sized fetches.
pub(super) struct Window {
    object: Arc<RemoteObject>,
    /// File offset of `buffer`'s first byte.
    position: u64,
    buffer: Bytes,
}

impl Read for Window {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        if self.buffer.is_empty() {
            let end = self
                .position
                .saturating_add(READ_WINDOW)
                .min(self.object.size);
            if self.position >= end {
                return Ok(0);
            }
            self.buffer = self
                .object
                .fetch(self.position..end)
                .map_err(std::io::Error::other)?;
        }
        let n = out.len().min(self.buffer.len());
        out[..n].copy_from_slice(&self.buffer[..n]);
        self.buffer = self.buffer.slice(n..);
        self.position += n as u64;
        Ok(n)
    }
}

/// reqwest is built without a TLS crypto provider of its own: rustls uses
/// the process default, which must be installed before any client is built;
/// herd's is ring (the one russh already builds).
fn install_tls_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// The store behind `url` and the object path the URL names.
fn open_store(url: &url::Url, storage: &Storage) -> Result<(Arc<dyn ObjectStore>, ObjectPath)> {
    let name = PathBuf::from(url.as_str());
    let fail = |source: object_store::Error| Error::Storage {
        path: name.clone(),
        source: Box::new(source),
    };
    if url.query().is_some() || url.fragment().is_some() {
        return Err(Error::Location {
            path: name.clone(),
            message: "a URL input cannot carry a query or a fragment ('?' and '#'); \
                      use '*' for a one-segment wildcard"
                .into(),
        });
    }
    install_tls_provider();
    let (scheme, path) =
        ObjectStoreScheme::parse(url).map_err(|e| fail(object_store::Error::from(e)))?;
    let options = ClientOptions::new()
        .with_allow_http(storage.allow_http)
        .with_connect_timeout(CONNECT_TIMEOUT)
        .with_timeout(REQUEST_TIMEOUT);
    let retry = RetryConfig {
        max_retries: MAX_RETRIES,
        retry_timeout: RETRY_TIMEOUT,
        ..RetryConfig::default()
    };
    let store: Arc<dyn ObjectStore> = match scheme {
        ObjectStoreScheme::AmazonS3 => {
            let mut b = object_store::aws::AmazonS3Builder::from_env().with_url(url.as_str());
            let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
            if env("AWS_ACCESS_KEY_ID").is_none() || env("AWS_REGION").is_none() {
                let shared = aws_shared_profile().map_err(|message| Error::Location {
                    path: name.clone(),
                    message,
                })?;
                if env("AWS_ACCESS_KEY_ID").is_none()
                    && let Some((key, secret, token)) = shared.credentials
                {
                    b = b.with_access_key_id(key).with_secret_access_key(secret);
                    if let Some(token) = token {
                        b = b.with_token(token);
                    }
                }
                if env("AWS_REGION").is_none()
                    && env("AWS_DEFAULT_REGION").is_none()
                    && let Some(region) = shared.region
                {
                    b = b.with_region(region);
                }
            }
            if let Some(region) = &storage.region {
                b = b.with_region(region);
            }
            if let Some(endpoint) = &storage.endpoint {
                b = b.with_endpoint(endpoint);
            }
            Arc::new(
                b.with_client_options(options)
                    .with_retry(retry)
                    .build()
                    .map_err(fail)?,
            )
        }
        ObjectStoreScheme::GoogleCloudStorage => {
            let mut b =
                object_store::gcp::GoogleCloudStorageBuilder::from_env().with_url(url.as_str());
            if let Some(endpoint) = &storage.endpoint {
                b = b.with_base_url(endpoint);
            }
            Arc::new(
                b.with_client_options(options)
                    .with_retry(retry)
                    .build()
                    .map_err(fail)?,
            )
        }
        ObjectStoreScheme::MicrosoftAzure => {
            let mut b =
                object_store::azure::MicrosoftAzureBuilder::from_env().with_url(url.as_str());
            if let Some(endpoint) = &storage.endpoint {
                b = b.with_endpoint(endpoint.clone());
            }
            Arc::new(
                b.with_client_options(options)
                    .with_retry(retry)
                    .build()
                    .map_err(fail)?,
            )
        }
        ObjectStoreScheme::Http => {
            let origin = &url[..url::Position::BeforePath];
            Arc::new(
                object_store::http::HttpBuilder::new()
                    .with_url(origin)
                    .with_client_options(options)
                    .with_retry(retry)
                    .build()
                    .map_err(fail)?,
            )
        }
        other => {
            return Err(Error::Location {
                path: name,
                message: format!("{other:?} is not an object store herd reads"),
            });
        }
    };
    Ok((store, path))
}

/// The part objects of a URL input, sorted by key: the object itself (even
/// when its name has glob characters), every `*.parquet` under a prefix (a
/// URL ending in `/`, or one naming no object), or the objects a glob in the
/// URL's path matches.
pub(super) fn find_parts(url: &url::Url, storage: &Storage) -> Result<Vec<PartRef>> {
    let (store, path) = open_store(url, storage)?;
    let name = PathBuf::from(url.as_str());
    let key = path.as_ref().to_string();

    let glob = parts::Glob::new(&key).map_err(|message| Error::Location {
        path: name.clone(),
        message,
    })?;
    // A URL naming an object is that object, even one whose own name has
    // glob characters (`x[1].parquet`), as a local file is; only when none
    // exists is it read as a glob or a prefix.
    let names_object = !url.path().ends_with('/') && !key.is_empty();
    let object = match names_object {
        false => None,
        true => {
            let (s, p) = (store.clone(), path.clone());
            match block(async move { s.head(&p).await }) {
                Ok(meta) => Some(meta),
                Err(object_store::Error::NotFound { .. }) => None,
                // A pattern need not be a name the store takes.
                Err(_) if glob.is_some() => None,
                Err(e) => {
                    return Err(Error::Storage {
                        path: name,
                        source: Box::new(e),
                    });
                }
            }
        }
    };
    let listing = match (object, glob) {
        (Some(meta), _) => Listing::One(meta),
        (None, Some(glob)) => {
            let prefix = ObjectPath::from(glob.base());
            let objects = list(&store, &prefix, &name)?;
            let matched: Vec<ObjectMeta> = objects
                .into_iter()
                .filter(|o| glob.matches(o.location.as_ref()))
                .collect();
            Listing::Under(
                glob.base().to_string(),
                matched,
                "the glob matches no objects",
            )
        }
        (None, None) => {
            let objects = list(&store, &path, &name)?;
            Listing::Under(
                key.clone(),
                parquet_files(objects, &key),
                match names_object {
                    true => "no object has this name, and no *.parquet object is under it",
                    false => "no *.parquet object is under this prefix",
                },
            )
        }
    };

    let objects = match listing {
        Listing::One(meta) => vec![(meta, Vec::new())],
        Listing::Under(root, objects, none) => {
            if objects.is_empty() {
                return Err(Error::NoParts {
                    path: name,
                    message: none,
                });
            }
            let mut with_keys = Vec::with_capacity(objects.len());
            for meta in objects {
                let relative = relative_to(meta.location.as_ref(), &root);
                let folders = parts::folder_keys(relative);
                with_keys.push((meta, folders));
            }
            with_keys
        }
    };
    if objects.len() > parts::MAX_PARTS {
        return Err(Error::TooManyParts {
            path: name,
            found: objects.len(),
        });
    }
    let mut out: Vec<PartRef> = objects
        .into_iter()
        .map(|(meta, folders)| {
            let part_name = object_url(url, &path, meta.location.as_ref());
            let version = version_of(&meta);
            PartRef {
                identity: object_identity(&meta),
                source: PartSource::Remote(Arc::new(RemoteObject {
                    store: store.clone(),
                    path: meta.location,
                    size: meta.size,
                    name: part_name.clone(),
                    version,
                })),
                name: part_name,
                folders,
            }
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

enum Listing {
    One(ObjectMeta),
    /// Objects under a root key (folder columns are read below it), and what
    /// to say when there are none.
    Under(String, Vec<ObjectMeta>, &'static str),
}

fn list(
    store: &Arc<dyn ObjectStore>,
    prefix: &ObjectPath,
    name: &std::path::Path,
) -> Result<Vec<ObjectMeta>> {
    let (store, prefix) = (store.clone(), prefix.clone());
    let limit = parts::MAX_PARTS * 4;
    let found = block(async move {
        let prefix = (!prefix.as_ref().is_empty()).then_some(prefix);
        store
            .list(prefix.as_ref())
            .take(limit + 1)
            .try_collect::<Vec<_>>()
            .await
    })
    .map_err(|e| Error::Storage {
        path: name.to_path_buf(),
        source: Box::new(e),
    })?;
    if found.len() > limit {
        return Err(Error::TooManyParts {
            path: name.to_path_buf(),
            found: found.len(),
        });
    }
    Ok(found)
}

/// The `*.parquet` objects of a listing under `root`, leaving out hidden
/// ones (a segment below the root starting with `.` or `_`).
fn parquet_files(objects: Vec<ObjectMeta>, root: &str) -> Vec<ObjectMeta> {
    objects
        .into_iter()
        .filter(|o| parts::is_data_file(relative_to(o.location.as_ref(), root)))
        .collect()
}

fn relative_to<'a>(key: &'a str, root: &str) -> &'a str {
    if root.is_empty() {
        return key;
    }
    key.strip_prefix(root)
        .map(|r| r.trim_start_matches('/'))
        .unwrap_or(key)
}

/// The URL of the object at `location`: the URL's scheme and authority,
/// then the URL's path segments that precede the object path (a bucket in
/// the path of an `https://` S3 URL), then the key.
fn object_url(url: &url::Url, path: &ObjectPath, location: &str) -> PathBuf {
    let segments: Vec<&str> = url.path().split('/').filter(|s| !s.is_empty()).collect();
    let lead = segments.len().saturating_sub(path.parts().count());
    let mut out = url[..url::Position::BeforePath].to_string();
    for s in &segments[..lead] {
        out.push('/');
        out.push_str(s);
    }
    out.push('/');
    out.push_str(location);
    PathBuf::from(out)
}

/// What the shared AWS files say for the active profile.
#[derive(Debug, Default, PartialEq)]
pub(super) struct SharedProfile {
    /// (access key id, secret, session token)
    pub credentials: Option<(String, String, Option<String>)>,
    pub region: Option<String>,
}

/// Reads `~/.aws/credentials` and `~/.aws/config` (or the files named by
/// `AWS_SHARED_CREDENTIALS_FILE` and `AWS_CONFIG_FILE`) for the profile
/// `AWS_PROFILE` (else `default`). A profile named in `AWS_PROFILE` that
/// neither file has is an error; missing files are not.
fn aws_shared_profile() -> std::result::Result<SharedProfile, String> {
    let home = std::env::var_os("HOME").map(PathBuf::from);
    let file = |var: &str, rel: &str| {
        std::env::var_os(var)
            .map(PathBuf::from)
            .or_else(|| home.as_ref().map(|h| h.join(rel)))
    };
    let named = std::env::var("AWS_PROFILE").ok().filter(|p| !p.is_empty());
    let profile = named.clone().unwrap_or_else(|| "default".to_string());
    let read = |p: Option<PathBuf>| p.and_then(|p| std::fs::read_to_string(p).ok());
    let credentials = read(file("AWS_SHARED_CREDENTIALS_FILE", ".aws/credentials"));
    let config = read(file("AWS_CONFIG_FILE", ".aws/config"));
    let found = shared_profile(
        credentials.as_deref().unwrap_or(""),
        config.as_deref().unwrap_or(""),
        &profile,
    );
    match (found, named) {
        (Some(p), _) => Ok(p),
        (None, None) => Ok(SharedProfile::default()),
        (None, Some(p)) => Err(format!(
            "AWS_PROFILE = '{p}', but neither ~/.aws/credentials nor ~/.aws/config has that \
             profile"
        )),
    }
}

/// The profile `profile` of a shared credentials file and a config file
/// (where sections are `[profile NAME]`, or `[default]`); `None` when
/// neither has it.
pub(super) fn shared_profile(
    credentials: &str,
    config: &str,
    profile: &str,
) -> Option<SharedProfile> {
    let from_credentials = ini_section(credentials, |s| s == profile);
    let from_config = ini_section(config, |s| {
        s == format!("profile {profile}") || (profile == "default" && s == "default")
    });
    if from_credentials.is_none() && from_config.is_none() {
        return None;
    }
    let get = |key: &str| {
        from_credentials
            .as_ref()
            .and_then(|c| c.iter().find(|(k, _)| k == key))
            .or_else(|| {
                from_config
                    .as_ref()
                    .and_then(|c| c.iter().find(|(k, _)| k == key))
            })
            .map(|(_, v)| v.clone())
    };
    let credentials = match (get("aws_access_key_id"), get("aws_secret_access_key")) {
        (Some(key), Some(secret)) => Some((key, secret, get("aws_session_token"))),
        _ => None,
    };
    Some(SharedProfile {
        credentials,
        region: get("region"),
    })
}

/// The `key = value` lines of the first INI section whose name passes `is`.
fn ini_section(text: &str, is: impl Fn(&str) -> bool) -> Option<Vec<(String, String)>> {
    let mut section: Option<Vec<(String, String)>> = None;
    let mut inside = false;
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            if section.is_some() {
                break;
            }
            inside = is(name.trim());
            if inside {
                section = Some(Vec::new());
            }
            continue;
        }
        if inside && let Some((k, v)) = line.split_once('=') {
            if let Some(s) = section.as_mut() {
                s.push((k.trim().to_string(), v.trim().to_string()));
            }
        }
    }
    section
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_aws_files_give_the_profile_credentials_and_region() {
        let credentials = "[default]\naws_access_key_id = AK1\naws_secret_access_key = S1\n\n\
                           [work]\naws_access_key_id=AK2\naws_secret_access_key=S2\n\
                           aws_session_token = T2\n";
        let config = "[default]\nregion = eu-west-1\n[profile work]\nregion = us-west-2\n";
        assert_eq!(
            shared_profile(credentials, config, "default"),
            Some(SharedProfile {
                credentials: Some(("AK1".into(), "S1".into(), None)),
                region: Some("eu-west-1".into()),
            })
        );
        assert_eq!(
            shared_profile(credentials, config, "work"),
            Some(SharedProfile {
                credentials: Some(("AK2".into(), "S2".into(), Some("T2".into()))),
                region: Some("us-west-2".into()),
            })
        );
        assert_eq!(shared_profile(credentials, config, "other"), None);
        assert_eq!(
            shared_profile("", "[profile x]\nregion = r\n", "x"),
            Some(SharedProfile {
                credentials: None,
                region: Some("r".into()),
            })
        );
    }

    #[test]
    fn prefetched_bytes_are_served_from_memory_and_bounded_by_the_object() {
        // An object store that is never asked: everything is held.
        install_tls_provider();
        let object = Arc::new(RemoteObject {
            store: Arc::new(
                object_store::http::HttpBuilder::new()
                    .with_url("http://127.0.0.1:1")
                    .with_client_options(ClientOptions::new().with_allow_http(true))
                    .build()
                    .unwrap(),
            ),
            path: ObjectPath::from("x.parquet"),
            size: 100,
            name: PathBuf::from("http://127.0.0.1:1/x.parquet"),
            version: GetOptions::default(),
        });
        let held = Prefetched {
            object,
            segments: vec![
                (10, Bytes::from_static(b"0123456789")),
                (50, Bytes::from_static(b"abcdef")),
            ],
        };
        assert_eq!(held.get_bytes(12, 3).unwrap(), Bytes::from_static(b"234"));
        assert_eq!(
            held.get_bytes(50, 6).unwrap(),
            Bytes::from_static(b"abcdef")
        );
        let mut read = held.get_read(53).unwrap();
        let mut first = [0u8; 3];
        read.read_exact(&mut first).unwrap();
        assert_eq!(&first, b"def");
        let e = held.get_bytes(98, 5).unwrap_err();
        assert!(e.to_string().contains("bytes 98..103"), "{e}");
    }
}
