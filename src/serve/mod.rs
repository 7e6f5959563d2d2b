//! `herd serve`: the prediction store over the network, as the Redis protocol
//! (RESP2 and RESP3) and as HTTP/1.1, for applications that read one
//! prediction per request.
//!
//! This room exists so that an application in any language reads the store
//! with the client it already has (`GET 42` through a Redis client, or
//! `GET /v1/predictions/42`) without sharing LMDB's files. It only reads:
//! every request opens one read transaction that reads the live pointer and
//! the values together, so a flip by a run or `herd store flip` is served
//! from the next request on and no answer mixes two versions. It never
//! writes the store, and it opens the store lazily: a store that does not
//! exist yet is answered with an error naming it, and is served once a run
//! creates it. About once a second, off the request path, it looks whether
//! the store's path (symbolic links followed) still names the `data.mdb` it
//! has open: a store moved away, replaced or deleted while served is let go,
//! and the one now at the path, if any, is opened.
//!
//! Clients are untrusted. Every buffer has a size limit and every wait a
//! timeout, named below; a client that breaks a limit is answered with an
//! error and disconnected, and no client can make another wait.
//!
//! Rooms: [`reader`] turns keys into answers (the store's reader API),
//! [`resp`] and [`http`] speak the protocols, [`metrics`] counts, and
//! [`listen`] accepts connections under the limits.

mod held;
mod http;
mod listen;
mod metrics;
mod reader;
mod resp;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use reader::{Key, parse_key};

/// Connections open at once, both protocols together. The process's
/// open-file limit, less [`RESERVED_FILES`], lowers it when smaller. Past it
/// a new connection is answered with an error and closed.
pub const MAX_CONNECTIONS: usize = 16_384;
/// Open files kept for the store and listeners when the connection limit is
/// derived from the open-file limit.
pub const RESERVED_FILES: usize = 64;
/// A connection with no request for this long is closed (the default of
/// `--idle-timeout`).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(300);
/// RESP: a command must arrive whole within this time of its first byte.
/// HTTP: a request head must arrive within this time of the server waiting
/// for it, so an HTTP connection idles at most this long between requests.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// A reply the client does not take within this time closes the connection.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// Keys one request may name (RESP `MGET` and `EXISTS`, HTTP `batchGet`).
pub const MAX_KEYS: usize = 10_000;
/// Bytes of stored values one request may gather.
pub const MAX_VALUE_BYTES: usize = 8 << 20;
/// Requests naming more than one key being answered at once, all
/// connections together: with [`MAX_VALUE_BYTES`] this bounds what batches
/// hold to 256 MiB.
pub const MAX_BATCHES_IN_FLIGHT: usize = 32;
/// RESP: bytes of one argument.
pub const MAX_ARG_BYTES: usize = 64 << 10;
/// RESP: bytes of one command, all arguments and framing together.
pub const MAX_COMMAND_BYTES: usize = 256 << 10;
/// RESP: bytes of one inline (telnet-style) command line.
pub const MAX_INLINE_BYTES: usize = 64 << 10;
/// HTTP: bytes of a request line and headers.
pub const MAX_HEAD_BYTES: usize = 16 << 10;
/// HTTP: bytes of a request body (`batchGet`).
pub const MAX_BODY_BYTES: usize = 1 << 20;
/// Worker threads (`--threads`) at most.
pub const MAX_THREADS: usize = 1024;
/// How long a connection may go without a request when `--idle-timeout 0`
/// asks for no limit (about a century: never, in practice).
pub const NO_IDLE_TIMEOUT: Duration = Duration::from_secs(100 * 365 * 24 * 3600);
/// Connections the kernel queues for each listener before they are
/// accepted (the listen backlog, as Redis's default).
pub const LISTEN_BACKLOG: u32 = 511;
/// The environment variable holding the password.
pub const PASSWORD_VAR: &str = "HERD_SERVE_PASSWORD";

pub type Result<T> = std::result::Result<T, Error>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "--{flag} {addr} is not a loopback address: set {PASSWORD_VAR} so that clients must authenticate (RESP AUTH, HTTP Authorization: Bearer)"
    )]
    NeedsPassword {
        flag: &'static str,
        addr: SocketAddr,
    },
    #[error("--{flag} '{addr}': {detail}")]
    BadAddress {
        flag: &'static str,
        addr: String,
        detail: String,
    },
    #[error("cannot listen on {addr} (--{flag}): {source}")]
    Bind {
        flag: &'static str,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot start the server's runtime: {0}")]
    Runtime(std::io::Error),
    #[error("--threads {0}: expected 1 to {MAX_THREADS} worker threads")]
    BadThreads(usize),
    #[error(
        "--preload {} MiB is more than this machine's memory ({} MiB): the replies would not fit",
        .asked >> 20,
        .memory >> 20
    )]
    BadPreload { asked: usize, memory: usize },
    #[error(
        "--prefix '{0}': expected a name that is not empty and not shaped like a version \
         ('v' and digits, which `GET vN:ID` reads), e.g. 'pred'"
    )]
    BadPrefix(String),
}

impl Error {
    /// The exit code: 2 for a bad command line, 1 otherwise.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::NeedsPassword { .. }
            | Error::BadAddress { .. }
            | Error::BadThreads(_)
            | Error::BadPreload { .. }
            | Error::BadPrefix(_) => 2,
            Error::Bind { .. } | Error::Runtime(_) => 1,
        }
    }
}

/// What `herd serve` was asked for.
#[derive(Clone, Debug)]
pub struct Options {
    pub store: PathBuf,
    pub resp: String,
    pub http: String,
    /// The Redis sink's key prefix: `{prefix}:live` and `{prefix}:v{N}:{id}`
    /// are answered as a Redis sink holds them, `{prefix}:{id}` as `{id}`.
    pub prefix: String,
    /// Required from every client when set; must be set for a non-loopback
    /// address.
    pub password: Option<String>,
    /// Worker threads (default: the machine's cores).
    pub threads: Option<usize>,
    /// A connection with no request for this long is closed
    /// ([`NO_IDLE_TIMEOUT`]: never).
    pub idle_timeout: Duration,
    /// Bytes the live version's rendered replies may take in memory
    /// (`--preload`; 0: none are held, every read goes to the store).
    pub preload: usize,
}

/// Where the servers listen, once bound.
#[derive(Clone, Copy, Debug)]
pub struct Bound {
    pub resp: SocketAddr,
    pub http: SocketAddr,
    /// Connections allowed at once (see [`MAX_CONNECTIONS`]).
    pub max_connections: usize,
}

/// What every connection shares.
pub(crate) struct Shared {
    reader: reader::Reader,
    metrics: metrics::Metrics,
    password: Option<String>,
    started: Instant,
    batches: Arc<tokio::sync::Semaphore>,
    idle_timeout: Duration,
    /// `--preload`, in bytes.
    preload: usize,
    /// Whether a thread is rendering the live version's replies now.
    preloading: std::sync::atomic::AtomicBool,
}

impl Shared {
    /// Whether `given` is the password (constant time in its length).
    fn password_matches(&self, given: &[u8]) -> bool {
        let Some(want) = &self.password else {
            return true;
        };
        let want = want.as_bytes();
        if want.len() != given.len() {
            return false;
        }
        want.iter()
            .zip(given)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
    }

    fn needs_auth(&self) -> bool {
        self.password.is_some()
    }
}

fn resolve(flag: &'static str, addr: &str) -> Result<SocketAddr> {
    use std::net::ToSocketAddrs;
    let bad = |detail: String| Error::BadAddress {
        flag,
        addr: addr.to_string(),
        detail,
    };
    let mut addrs = addr
        .to_socket_addrs()
        .map_err(|e| bad(format!("expected HOST:PORT ({e})")))?;
    addrs
        .next()
        .ok_or_else(|| bad("resolves to no address".into()))
}

/// Checks the options: addresses resolve, a non-loopback address has a
/// password, the thread count is within [`MAX_THREADS`], the prefix can be
/// told apart from an id and a version.
fn check(opts: &Options) -> Result<(SocketAddr, SocketAddr)> {
    if let Some(n) = opts.threads
        && !(1..=MAX_THREADS).contains(&n)
    {
        return Err(Error::BadThreads(n));
    }
    if let Some(memory) = physical_memory()
        && opts.preload > memory
    {
        return Err(Error::BadPreload {
            asked: opts.preload,
            memory,
        });
    }
    let p = &opts.prefix;
    let version_like =
        p.len() > 1 && p.starts_with('v') && p[1..].bytes().all(|b| b.is_ascii_digit());
    if p.is_empty() || version_like {
        return Err(Error::BadPrefix(p.clone()));
    }
    let resp = resolve("resp", &opts.resp)?;
    let http = resolve("http", &opts.http)?;
    for (flag, addr) in [("resp", resp), ("http", http)] {
        if !addr.ip().is_loopback() && opts.password.as_deref().is_none_or(str::is_empty) {
            return Err(Error::NeedsPassword { flag, addr });
        }
    }
    Ok((resp, http))
}

/// Runs the servers until Ctrl-C or SIGTERM. `on_bound` is called once both
/// listen.
pub fn run(opts: Options, on_bound: impl FnOnce(&Bound)) -> Result<()> {
    let (resp_addr, http_addr) = check(&opts)?;
    let threads = opts.threads.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
            .min(MAX_THREADS)
    });
    // One thread: no work stealing to pay for.
    let mut builder = if threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(threads);
        b
    };
    let rt = builder.enable_all().build().map_err(Error::Runtime)?;
    rt.block_on(async move {
        let max_connections = listen::connection_limit();
        let shared = Arc::new(Shared {
            reader: reader::Reader::new(opts.store.clone(), opts.prefix.as_bytes().to_vec()),
            metrics: metrics::Metrics::default(),
            password: opts.password.clone().filter(|p| !p.is_empty()),
            started: Instant::now(),
            batches: Arc::new(tokio::sync::Semaphore::new(MAX_BATCHES_IN_FLIGHT)),
            idle_timeout: opts.idle_timeout,
            preload: opts.preload,
            preloading: std::sync::atomic::AtomicBool::new(false),
        });
        let bind = |flag, addr: SocketAddr| async move {
            let socket = if addr.is_ipv4() {
                tokio::net::TcpSocket::new_v4()
            } else {
                tokio::net::TcpSocket::new_v6()
            };
            socket
                .and_then(|s| {
                    s.set_reuseaddr(true)?;
                    s.bind(addr)?;
                    s.listen(LISTEN_BACKLOG)
                })
                .map_err(|source| Error::Bind { flag, addr, source })
        };
        let resp = bind("resp", resp_addr).await?;
        let http = bind("http", http_addr).await?;
        let bound = Bound {
            resp: resp.local_addr().unwrap_or(resp_addr),
            http: http.local_addr().unwrap_or(http_addr),
            max_connections,
        };
        on_bound(&bound);
        let watch = tokio::spawn(watch_store(shared.clone()));
        let slots = Arc::new(listen::Slots::new(max_connections));
        let resp_task = tokio::spawn(listen::accept(
            resp,
            slots.clone(),
            shared.clone(),
            listen::Protocol::Resp,
        ));
        let http_task = tokio::spawn(listen::accept(
            http,
            slots,
            shared.clone(),
            listen::Protocol::Http,
        ));
        shutdown_signal().await;
        resp_task.abort();
        http_task.abort();
        watch.abort();
        Ok(())
    })
}

/// Runs [`reader::Reader::check_store`] every
/// [`reader::STORE_CHECK_INTERVAL`], off the request path, forever: a store
/// replaced or deleted while served is noticed within about a second. With
/// `--preload`, then looks whether the live version is the one held.
async fn watch_store(shared: Arc<Shared>) {
    let mut tick = tokio::time::interval(reader::STORE_CHECK_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let checked = shared.clone();
        let to_hold = tokio::task::spawn_blocking(move || {
            checked.reader.check_store();
            match checked.preload {
                0 => None,
                _ => checked.reader.to_hold(),
            }
        })
        .await;
        if let Ok(Some((store, version))) = to_hold {
            preload(&shared, store, version);
        }
    }
}

/// Unless a thread is at it already, starts one that renders `version` of
/// `store` (`--preload`).
fn preload(shared: &Arc<Shared>, store: crate::store::Store, version: u64) {
    use std::sync::atomic::Ordering;
    if shared.preloading.swap(true, Ordering::AcqRel) {
        return;
    }
    let worker = shared.clone();
    let spawned = std::thread::Builder::new()
        .name("herd-preload".into())
        .spawn(move || {
            worker.reader.hold(&store, version, worker.preload);
            worker.preloading.store(false, Ordering::Release);
        });
    if spawned.is_err() {
        shared.preloading.store(false, Ordering::Release);
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

/// The machine's memory in bytes, where the system tells it.
fn physical_memory() -> Option<usize> {
    #[cfg(unix)]
    {
        // SAFETY: sysconf has no preconditions.
        let (pages, size) = unsafe {
            (
                libc::sysconf(libc::_SC_PHYS_PAGES),
                libc::sysconf(libc::_SC_PAGESIZE),
            )
        };
        if pages > 0 && size > 0 {
            return (pages as usize).checked_mul(size as usize);
        }
    }
    None
}

/// Unix seconds now.
fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(resp: &str, http: &str, password: Option<&str>) -> Options {
        Options {
            store: "store".into(),
            resp: resp.into(),
            http: http.into(),
            prefix: "pred".into(),
            password: password.map(String::from),
            threads: Some(1),
            idle_timeout: IDLE_TIMEOUT,
            preload: 0,
        }
    }

    #[test]
    fn a_non_loopback_address_needs_a_password() {
        let err = check(&opts("0.0.0.0:6380", "127.0.0.1:8080", None)).unwrap_err();
        assert!(err.to_string().contains(PASSWORD_VAR), "{err}");
        assert_eq!(err.exit_code(), 2);
        let err = check(&opts("127.0.0.1:6380", "0.0.0.0:8080", Some(""))).unwrap_err();
        assert!(err.to_string().contains("--http"), "{err}");
        assert!(check(&opts("0.0.0.0:6380", "[::]:8080", Some("s3cret"))).is_ok());
        assert!(check(&opts("127.0.0.1:6380", "[::1]:8080", None)).is_ok());
    }

    #[test]
    fn the_thread_count_is_checked_against_its_limit() {
        let mut o = opts("127.0.0.1:0", "127.0.0.1:0", None);
        for bad in [0, MAX_THREADS + 1, 20_000] {
            o.threads = Some(bad);
            let err = check(&o).unwrap_err();
            assert_eq!(err.exit_code(), 2);
            assert!(err.to_string().contains("1 to 1024"), "{err}");
        }
        o.threads = Some(MAX_THREADS);
        assert!(check(&o).is_ok());
    }

    #[test]
    fn a_preload_past_the_machines_memory_is_refused() {
        let memory = physical_memory().expect("the machine's memory");
        let mut o = opts("127.0.0.1:0", "127.0.0.1:0", None);
        o.preload = memory + (1 << 20);
        let err = check(&o).unwrap_err();
        assert_eq!(err.exit_code(), 2);
        assert!(
            err.to_string().contains("more than this machine's memory"),
            "{err}"
        );
        o.preload = memory / 2;
        assert!(check(&o).is_ok());
    }

    #[test]
    fn a_bad_address_names_the_flag() {
        let err = check(&opts("127.0.0.1", "127.0.0.1:8080", None)).unwrap_err();
        assert!(err.to_string().starts_with("--resp '127.0.0.1'"), "{err}");
    }

    #[test]
    fn password_compare_needs_every_byte() {
        let shared = Shared {
            reader: reader::Reader::new("store".into(), b"pred".to_vec()),
            metrics: metrics::Metrics::default(),
            password: Some("hunter2".into()),
            started: Instant::now(),
            batches: Arc::new(tokio::sync::Semaphore::new(1)),
            idle_timeout: IDLE_TIMEOUT,
            preload: 0,
            preloading: Default::default(),
        };
        assert!(shared.password_matches(b"hunter2"));
        assert!(!shared.password_matches(b"hunter3"));
        assert!(!shared.password_matches(b"hunter"));
        assert!(!shared.password_matches(b""));
    }
}
