//! SSH hosts: one russh connection per host, the worker binary and model
//! weights shipped once into a content-addressed cache there, one worker per
//! slot on its own exec channel.
//!
//! [`HostSession::start`] returns at once and sets the host up in the
//! background (connect, check the host key, authenticate, ship), so every
//! host of a fleet is set up concurrently; [`HostSession::spawn`] hands out a
//! [`Spawned`] for a slot straight away, whose streams come alive when the
//! host is ready (or whose exit names why it never will). A host that cannot
//! be reached, or whose connection dies, ends its workers with a reason; the
//! coordinator carries on with the other hosts.
//!
//! Must not: accept a host key that known_hosts does not vouch for (unless
//! the host says `trust = "accept-new"`, and never a changed one), put an
//! unquoted value in a remote command, or run a shipped file before its
//! sha256 is checked on the remote side.

mod connect;
mod exec;
mod hostkey;
mod ship;
mod target;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use russh::client::Handle;
use tokio::sync::watch;

use crate::config::SshHost;

pub use hostkey::{KeyCheck, fingerprint, known_hosts_name};
pub use target::{Target, resolve, resolve_from_env, split_address};

use super::{BoxFuture, HostLink, ModelFile, Setup, Spawned};
use connect::Client;
use exec::{exec_capture, run_worker};

/// TCP connect plus key exchange must finish within this.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Authentication must finish within this.
pub const AUTH_TIMEOUT: Duration = Duration::from_secs(10);
/// A keepalive goes out after this long without traffic from the server...
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(2);
/// ...and the connection counts as dead after this many go unanswered.
pub const KEEPALIVE_MAX: usize = 3;
/// The first wait before reconnecting after a dropped connection; doubled
/// after each failed try, up to [`RECONNECT_BACKOFF_MAX`].
pub const RECONNECT_BACKOFF_FIRST: Duration = Duration::from_millis(250);
pub const RECONNECT_BACKOFF_MAX: Duration = Duration::from_secs(4);
/// How often a session looks whether its connection has dropped.
const DROP_POLL: Duration = Duration::from_millis(200);
/// A setup command (cache probe, checksum) must finish within this.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);
/// An upload must move at least this many bytes per second on average
/// (plus [`COMMAND_TIMEOUT`]), or it is abandoned.
pub const MIN_UPLOAD_BYTES_PER_S: u64 = 1 << 20;

pub type Result<T> = std::result::Result<T, Error>;

#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum Error {
    /// The host's settings cannot work (bad address, no user, ...).
    #[error("host '{host}': {message}")]
    Config { host: String, message: String },
    #[error("host '{host}': cannot connect to {addr}: {message}")]
    Connect {
        host: String,
        addr: String,
        message: String,
    },
    /// The server's key was refused (unknown or changed).
    #[error("host '{host}': {message}")]
    HostKey { host: String, message: String },
    #[error("host '{host}': authentication as '{user}' at {addr} failed: {message}")]
    Auth {
        host: String,
        user: String,
        addr: String,
        message: String,
    },
    /// A remote command (cache probe, upload, checksum) failed.
    #[error("host '{host}': {message}")]
    Remote { host: String, message: String },
    /// A local file to ship could not be read.
    #[error("host '{host}': cannot read '{}': {message}", path.display())]
    Local {
        host: String,
        path: PathBuf,
        message: String,
    },
}

/// What a host session has done so far, for `herd hosts check` and the run
/// report.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct HostStatus {
    /// `host:port` connected to.
    pub addr: String,
    /// [`KeyCheck::label`], or empty before the key was seen.
    pub host_key: String,
    /// How authentication went: `key PATH`, `agent`, `FAILED`; empty before.
    pub auth: String,
    /// Bytes uploaded (binary plus model); 0 when the cache had both.
    pub shipped_bytes: u64,
    /// Files found in the remote cache with the right sha256.
    pub cached_files: u32,
    /// Files uploaded.
    pub uploaded_files: u32,
    /// TCP connect, key exchange and authentication.
    pub connect_time: Option<Duration>,
    /// Cache probe plus uploads.
    pub ship_time: Option<Duration>,
    /// The remote cache folder (absolute).
    pub cache_dir: Option<String>,
    /// Times the connection dropped and was set up again.
    pub reconnects: u32,
    pub error: Option<String>,
}

/// One line on how a host's setup went, for the run log.
pub fn describe_setup(s: &HostStatus) -> String {
    let ms = |d: Option<Duration>| {
        d.map(|d| format!("{:.0} ms", d.as_secs_f64() * 1e3))
            .unwrap_or_else(|| "-".into())
    };
    let shipped = if s.uploaded_files == 0 {
        "nothing shipped (cached)".to_string()
    } else {
        format!(
            "shipped {} in {} file{} ({} cached)",
            human_bytes(s.shipped_bytes),
            s.uploaded_files,
            if s.uploaded_files == 1 { "" } else { "s" },
            s.cached_files
        )
    };
    format!(
        "ssh {}: host key {}, auth {}, connected in {}; {shipped}, ready in {}",
        s.addr,
        s.host_key,
        s.auth,
        ms(s.connect_time),
        ms(s.ship_time)
    )
}

/// `15.3 MB`, `812 B`.
pub fn human_bytes(n: u64) -> String {
    match n {
        n if n >= 1 << 30 => format!("{:.1} GB", n as f64 / (1u64 << 30) as f64),
        n if n >= 1 << 20 => format!("{:.1} MB", n as f64 / (1u64 << 20) as f64),
        n if n >= 1 << 10 => format!("{:.1} KB", n as f64 / (1u64 << 10) as f64),
        n => format!("{n} B"),
    }
}

/// Files a host needs before its workers start.
#[derive(Clone, Debug, PartialEq)]
pub struct Payload {
    /// The worker executable to ship (this herd, or the host's
    /// `worker_binary`).
    pub binary: PathBuf,
    /// Model weights, their sha256 and the files beside them they read;
    /// `None` for a probe.
    pub model: Option<ModelFile>,
}

#[derive(Clone)]
enum Stage {
    Starting,
    Ready(Arc<Ready>),
    Failed(Error),
}

struct Ready {
    handle: Handle<Client>,
    name: String,
    addr: String,
    binary: String,
    /// The shipped binary's sha256, checked on the host before every exec.
    binary_sha: String,
    model: Option<String>,
}

/// One SSH host: its connection (once up) and its slots' workers.
pub struct HostSession {
    name: String,
    /// The configured address, for `herd hosts check`.
    address: String,
    stage: watch::Receiver<Stage>,
    status: Arc<Mutex<HostStatus>>,
    setup: tokio::task::JoinHandle<()>,
}

impl Drop for HostSession {
    fn drop(&mut self) {
        self.setup.abort();
    }
}

impl HostSession {
    /// Starts setting up host `name` in the background: connect, check the
    /// host key, authenticate, ship `payload`. Must be called inside a tokio
    /// runtime.
    pub fn start(name: &str, ssh: &SshHost, payload: Payload) -> HostSession {
        let (tx, rx) = watch::channel(Stage::Starting);
        let status = Arc::new(Mutex::new(HostStatus::default()));
        let setup = {
            let name = name.to_string();
            let ssh = ssh.clone();
            let status = status.clone();
            tokio::spawn(async move {
                let mut ready = match set_up(&name, &ssh, &payload, &status).await {
                    Ok(ready) => Arc::new(ready),
                    Err(e) => {
                        lock(&status).error = Some(e.to_string());
                        let _ = tx.send(Stage::Failed(e));
                        return;
                    }
                };
                let _ = tx.send(Stage::Ready(ready.clone()));
                // Watches the connection for the session's life: a dropped
                // one is set up again with backoff within the window; new
                // workers wait for it meanwhile (the coordinator retries the
                // attempts that were running elsewhere).
                let window = Duration::from_secs(ssh.reconnect_window_secs);
                loop {
                    while !ready.handle.is_closed() {
                        tokio::time::sleep(DROP_POLL).await;
                    }
                    let _ = tx.send(Stage::Starting);
                    match reconnect(&name, &ssh, &payload, &status, window).await {
                        Ok(r) => {
                            ready = Arc::new(r);
                            lock(&status).reconnects += 1;
                            let _ = tx.send(Stage::Ready(ready.clone()));
                        }
                        Err(e) => {
                            lock(&status).error = Some(e.to_string());
                            let _ = tx.send(Stage::Failed(e));
                            return;
                        }
                    }
                }
            })
        };
        HostSession {
            name: name.to_string(),
            address: ssh.address.clone(),
            stage: rx,
            status,
            setup,
        }
    }

    /// Waits until the host is set up (or failed to be).
    pub async fn ready(&self) -> Result<()> {
        wait_ready(&self.name, &mut self.stage.clone())
            .await
            .map(|_| ())
    }

    pub fn status(&self) -> HostStatus {
        lock(&self.status).clone()
    }

    /// Bytes uploaded to this host so far.
    pub fn shipped_bytes(&self) -> u64 {
        lock(&self.status).shipped_bytes
    }

    /// The model weights' path on the host, once shipped.
    pub fn model_path(&self) -> Option<String> {
        match &*self.stage.borrow() {
            Stage::Ready(r) => r.model.clone(),
            _ => None,
        }
    }

    /// Runs `command` (already quoted) on the host once it is ready: its exit
    /// status, stdout and stderr.
    pub async fn run_command(&self, command: &str) -> Result<(Option<u32>, String, String)> {
        let ready = wait_ready(&self.name, &mut self.stage.clone()).await?;
        exec_capture(&ready.handle, command, COMMAND_TIMEOUT)
            .await
            .map_err(|message| Error::Remote {
                host: self.name.clone(),
                message,
            })
    }

    /// Starts `herd worker` on the host with `env` added to its environment,
    /// on an exec channel of this host's connection. Returns at once; the
    /// worker starts when the host is ready. The remote process ends when its
    /// stdin closes, when it is killed, or when the connection goes.
    pub fn spawn(&self, env: &[(String, String)]) -> Spawned {
        let stage = self.stage.clone();
        let env = env.to_vec();
        let name = self.name.clone();
        Spawned::driven("ssh", &self.name, move |pipes, kill_rx| async move {
            run_worker(&name, stage, env, pipes, kill_rx).await
        })
    }
}

fn lock(status: &Mutex<HostStatus>) -> std::sync::MutexGuard<'_, HostStatus> {
    status.lock().unwrap_or_else(|e| e.into_inner())
}

/// Sets the host up again after its connection dropped: tries with backoff
/// until `window` has passed; a refused host key or login ends it at once.
async fn reconnect(
    name: &str,
    ssh: &SshHost,
    payload: &Payload,
    status: &Mutex<HostStatus>,
    window: Duration,
) -> Result<Ready> {
    let deadline = tokio::time::Instant::now() + window;
    let mut wait = RECONNECT_BACKOFF_FIRST;
    loop {
        match set_up(name, ssh, payload, status).await {
            Ok(ready) => return Ok(ready),
            Err(e @ (Error::HostKey { .. } | Error::Auth { .. } | Error::Config { .. })) => {
                return Err(e);
            }
            Err(e) if tokio::time::Instant::now() + wait >= deadline => {
                return Err(Error::Remote {
                    host: name.to_string(),
                    message: format!(
                        "lost: the connection dropped and did not come back within {} s \
                         (reconnect_window); last try: {e}",
                        window.as_secs()
                    ),
                });
            }
            Err(_) => {
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(RECONNECT_BACKOFF_MAX);
            }
        }
    }
}

async fn wait_ready(name: &str, stage: &mut watch::Receiver<Stage>) -> Result<Arc<Ready>> {
    loop {
        match &*stage.borrow_and_update() {
            // A dropped connection is being set up again: wait for it.
            Stage::Ready(r) if r.handle.is_closed() => {}
            Stage::Ready(r) => return Ok(r.clone()),
            Stage::Failed(e) => return Err(e.clone()),
            Stage::Starting => {}
        }
        if stage.changed().await.is_err() {
            return match &*stage.borrow() {
                Stage::Ready(r) => Ok(r.clone()),
                Stage::Failed(e) => Err(e.clone()),
                Stage::Starting => Err(Error::Remote {
                    host: name.to_string(),
                    message: "host setup was abandoned".into(),
                }),
            };
        }
    }
}

/// Connects to the host, authenticates and ships `payload`.
async fn set_up(
    name: &str,
    ssh: &SshHost,
    payload: &Payload,
    status: &Mutex<HostStatus>,
) -> Result<Ready> {
    let target = resolve_from_env(name, ssh)?;
    let addr = target.addr();
    lock(status).addr = addr.clone();
    let handle = connect::open(name, &target, status).await?;
    let home = std::env::var_os("HOME").map(PathBuf::from);
    let binary = target::expand_home(&payload.binary, home.as_deref());
    let shipped = ship::ship(name, &handle, payload, &binary, status).await?;
    Ok(Ready {
        handle,
        name: name.to_string(),
        addr,
        binary: shipped.binary,
        binary_sha: shipped.binary_sha,
        model: shipped.model,
    })
}

/// Starts setting up an SSH host for workers that load `model`: ships the
/// host's `worker_binary`, or this herd.
pub fn start(
    name: &str,
    ssh: &SshHost,
    model: Option<ModelFile>,
) -> std::result::Result<HostSession, String> {
    let binary = match &ssh.worker_binary {
        Some(b) => b.clone(),
        None => super::local::worker_exe()
            .map_err(|e| format!("host '{name}': cannot find the worker binary to ship: {e}"))?,
    };
    let payload = Payload { binary, model };
    Ok(HostSession::start(name, ssh, payload))
}

impl HostLink for HostSession {
    fn start_worker(&self, env: &[(String, String)]) -> std::result::Result<Spawned, String> {
        Ok(self.spawn(env))
    }

    fn model_path(&self) -> Option<String> {
        HostSession::model_path(self)
    }

    fn shipped_bytes(&self) -> u64 {
        HostSession::shipped_bytes(self)
    }

    fn ready(&self) -> BoxFuture<'_, std::result::Result<Option<String>, String>> {
        Box::pin(async move {
            HostSession::ready(self)
                .await
                .map(|()| Some(describe_setup(&self.status())))
                .map_err(|e| e.to_string())
        })
    }

    fn setup(&self) -> Setup {
        let st = self.status();
        let or_dash = |s: String| if s.is_empty() { "-".to_string() } else { s };
        Setup {
            transport: format!("ssh {}", self.address),
            host_key: or_dash(st.host_key),
            auth: or_dash(st.auth),
            shipped: if st.uploaded_files > 0 {
                human_bytes(st.shipped_bytes)
            } else if st.cached_files > 0 {
                "cached".into()
            } else {
                "-".into()
            },
            detail: None,
            error: st.error,
        }
    }
}
