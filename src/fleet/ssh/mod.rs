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

mod hostkey;
mod quote;
mod target;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use russh::client::{self, Handle};
use russh::keys::{PrivateKeyWithHashAlg, PublicKeyOrCertificate};
use russh::{ChannelMsg, Sig};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{oneshot, watch};

use crate::config::SshHost;

pub use hostkey::{KeyCheck, fingerprint, known_hosts_name};
pub use quote::{has_nul, is_env_name, quote};
pub use target::{Target, resolve, resolve_from_env, split_address};

use super::Spawned;

/// TCP connect plus key exchange must finish within this.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Authentication must finish within this.
pub const AUTH_TIMEOUT: Duration = Duration::from_secs(10);
/// A keepalive goes out after this long without traffic from the server...
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(2);
/// ...and the connection counts as dead after this many go unanswered.
pub const KEEPALIVE_MAX: usize = 3;
/// A setup command (cache probe, checksum) must finish within this.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);
/// An upload must move at least this many bytes per second on average
/// (plus [`COMMAND_TIMEOUT`]), or it is abandoned.
pub const MIN_UPLOAD_BYTES_PER_S: u64 = 1 << 20;
/// After a kill, how long the server has to report the worker's end before
/// the channel is closed from this side.
const KILL_GRACE: Duration = Duration::from_secs(2);
/// Bytes per `data_bytes` call while uploading.
const UPLOAD_PIECE_BYTES: usize = 256 << 10;
/// Buffer of each in-process pipe between a worker's channel and the
/// coordinator.
const PIPE_BYTES: usize = 256 << 10;
/// Temporary upload files older than this many minutes (left by a
/// coordinator that died mid-upload) are removed by the next cache probe;
/// younger ones may belong to an upload in progress.
const STALE_UPLOAD_MINUTES: u32 = 60;
/// The name of the shipped binary inside its content-addressed folder.
const REMOTE_BINARY_NAME: &str = "herd";

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
    /// Model weights and their sha256 (lower-case hex); `None` for a probe.
    pub model: Option<(PathBuf, String)>,
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
    model: Option<String>,
}

/// One SSH host: its connection (once up) and its slots' workers.
pub struct HostSession {
    name: String,
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
                let stage = match set_up(&name, &ssh, &payload, &status).await {
                    Ok(ready) => Stage::Ready(Arc::new(ready)),
                    Err(e) => {
                        lock(&status).error = Some(e.to_string());
                        Stage::Failed(e)
                    }
                };
                let _ = tx.send(stage);
            })
        };
        HostSession {
            name: name.to_string(),
            stage: rx,
            status,
            setup,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
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
        let (stdin_user, stdin_ours) = tokio::io::duplex(PIPE_BYTES);
        let (stdout_ours, stdout_user) = tokio::io::duplex(PIPE_BYTES);
        let (stderr_ours, stderr_user) = tokio::io::duplex(PIPE_BYTES);
        let (kill_tx, kill_rx) = oneshot::channel::<()>();
        let (exit_tx, exit_rx) = oneshot::channel::<String>();
        let stage = self.stage.clone();
        let env = env.to_vec();
        let name_for_task = self.name.clone();
        tokio::spawn(async move {
            let reason = run_worker(
                &name_for_task,
                stage,
                env,
                stdin_ours,
                stdout_ours,
                stderr_ours,
                kill_rx,
            )
            .await;
            let _ = exit_tx.send(reason);
        });
        let name = self.name.clone();
        Spawned {
            stdin: Box::new(stdin_user),
            stdout: Box::new(stdout_user),
            stderr: Box::new(stderr_user),
            exit: Box::pin(async move {
                exit_rx
                    .await
                    .unwrap_or_else(|_| format!("ended: the ssh task for host '{name}' stopped"))
            }),
            kill: kill_tx,
        }
    }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

fn lock(status: &Mutex<HostStatus>) -> std::sync::MutexGuard<'_, HostStatus> {
    status.lock().unwrap_or_else(|e| e.into_inner())
}

async fn wait_ready(name: &str, stage: &mut watch::Receiver<Stage>) -> Result<Arc<Ready>> {
    loop {
        match &*stage.borrow_and_update() {
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

/// The russh client handler: checks the server's key against known_hosts.
struct Client {
    host: String,
    port: u16,
    known_hosts: PathBuf,
    trust: crate::config::Trust,
    verdict: Arc<Mutex<Option<KeyCheck>>>,
}

impl client::Handler for Client {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        server_public_key: &PublicKeyOrCertificate,
    ) -> std::result::Result<bool, Self::Error> {
        let check = match server_public_key {
            PublicKeyOrCertificate::PublicKey { key, .. } => {
                hostkey::check(&self.host, self.port, key, &self.known_hosts, self.trust)
            }
            PublicKeyOrCertificate::Certificate(_) => KeyCheck::Broken(
                "the server offered a host certificate; herd checks plain host keys only".into(),
            ),
        };
        let ok = check.accepted();
        *self.verdict.lock().unwrap_or_else(|e| e.into_inner()) = Some(check);
        Ok(ok)
    }
}

async fn set_up(
    name: &str,
    ssh: &SshHost,
    payload: &Payload,
    status: &Mutex<HostStatus>,
) -> Result<Ready> {
    let target = resolve_from_env(name, ssh)?;
    let addr = target.addr();
    lock(status).addr = addr.clone();
    let started = Instant::now();
    let mut handle = connect(name, &target, status).await?;
    let how =
        match tokio::time::timeout(AUTH_TIMEOUT, authenticate(&mut handle, name, &target)).await {
            Ok(Ok(how)) => how,
            Ok(Err(e)) => {
                lock(status).auth = "FAILED".into();
                return Err(e);
            }
            Err(_) => {
                lock(status).auth = "FAILED".into();
                return Err(Error::Auth {
                    host: name.into(),
                    user: target.user.clone(),
                    addr,
                    message: format!("no answer within {}s", AUTH_TIMEOUT.as_secs()),
                });
            }
        };
    {
        let mut s = lock(status);
        s.auth = how;
        s.connect_time = Some(started.elapsed());
    }
    let shipping = Instant::now();
    let remote = |message: String| Error::Remote {
        host: name.into(),
        message,
    };

    let home = std::env::var_os("HOME").map(PathBuf::from);
    let binary = target::expand_home(&payload.binary, home.as_deref());
    let binary_sha = file_sha256(name, &binary).await?;
    let model_sha = payload.model.as_ref().map(|(_, sha)| sha.clone());
    let probe = probe_command(&binary_sha, model_sha.as_deref());
    let (code, out, err) = exec_capture(&handle, &probe, COMMAND_TIMEOUT)
        .await
        .map_err(remote)?;
    if code != Some(0) {
        return Err(remote(format!(
            "cannot prepare the cache folder (exit {}): {}",
            code.map(|c| c.to_string()).unwrap_or_else(|| "none".into()),
            err.trim()
        )));
    }
    let probed = parse_probe(&out).map_err(remote)?;
    lock(status).cache_dir = Some(probed.cache.clone());
    let binary_path = format!("{}/bin/{binary_sha}/{REMOTE_BINARY_NAME}", probed.cache);
    if probed.binary_sha.as_deref() == Some(binary_sha.as_str()) {
        lock(status).cached_files += 1;
    } else {
        let sent = upload(name, &handle, &binary, &binary_path, &binary_sha, "0700").await?;
        let mut s = lock(status);
        s.shipped_bytes += sent;
        s.uploaded_files += 1;
    }
    let mut model_path = None;
    if let Some((local, sha)) = &payload.model {
        let path = format!("{}/models/{sha}.safetensors", probed.cache);
        if probed.model_sha.as_deref() == Some(sha.as_str()) {
            lock(status).cached_files += 1;
        } else {
            let sent = upload(name, &handle, local, &path, sha, "0600").await?;
            let mut s = lock(status);
            s.shipped_bytes += sent;
            s.uploaded_files += 1;
        }
        model_path = Some(path);
    }
    lock(status).ship_time = Some(shipping.elapsed());
    Ok(Ready {
        handle,
        name: name.to_string(),
        addr,
        binary: binary_path,
        model: model_path,
    })
}

/// Connects and checks the host key (its verdict goes into `status`).
async fn connect(
    name: &str,
    target: &Target,
    status: &Mutex<HostStatus>,
) -> Result<Handle<Client>> {
    let config = Arc::new(client::Config {
        keepalive_interval: Some(KEEPALIVE_INTERVAL),
        keepalive_max: KEEPALIVE_MAX,
        nodelay: true,
        ..Default::default()
    });
    let verdict = Arc::new(Mutex::new(None));
    let handler = Client {
        host: target.host.clone(),
        port: target.port,
        known_hosts: target.known_hosts.clone(),
        trust: target.trust,
        verdict: verdict.clone(),
    };
    let addr = target.addr();
    let connect_err = |message: String| Error::Connect {
        host: name.into(),
        addr: addr.clone(),
        message,
    };
    let res = tokio::time::timeout(
        CONNECT_TIMEOUT,
        client::connect(config, (target.host.as_str(), target.port), handler),
    )
    .await;
    let seen = verdict.lock().unwrap_or_else(|e| e.into_inner()).clone();
    lock(status).host_key = seen.as_ref().map(|c| c.label()).unwrap_or("-").into();
    if let Some(check) = &seen {
        if let Some(why) = check.refusal() {
            return Err(Error::HostKey {
                host: name.into(),
                message: why.to_string(),
            });
        }
    }
    match res {
        Err(_) => Err(connect_err(format!(
            "no answer within {}s (is the host up and is sshd listening on port {}?)",
            CONNECT_TIMEOUT.as_secs(),
            target.port
        ))),
        Ok(Err(e)) => Err(connect_err(e.to_string())),
        Ok(Ok(handle)) => Ok(handle),
    }
}

/// The signature hash to use with a key: the best the server supports for an
/// RSA key, none for the others.
async fn rsa_hash(
    handle: &Handle<Client>,
    rsa: bool,
) -> std::result::Result<Option<russh::keys::HashAlg>, russh::Error> {
    if rsa {
        Ok(handle.best_supported_rsa_hash().await?.flatten())
    } else {
        Ok(None)
    }
}

/// Tries the identities, then the agent; says which one worked.
async fn authenticate(handle: &mut Handle<Client>, name: &str, target: &Target) -> Result<String> {
    let auth_err = |message: String| Error::Auth {
        host: name.into(),
        user: target.user.clone(),
        addr: target.addr(),
        message,
    };
    let mut refused: Vec<String> = Vec::new();
    let mut files = target.identities.clone();
    let use_agent = !target.identity_from_host && std::env::var_os("SSH_AUTH_SOCK").is_some();
    if files.is_empty() && !use_agent {
        if let Some(home) = std::env::var_os("HOME") {
            let ssh = PathBuf::from(home).join(".ssh");
            files = ["id_ed25519", "id_rsa"]
                .iter()
                .map(|f| ssh.join(f))
                .filter(|p| p.exists())
                .collect();
        }
    }
    for path in &files {
        let key = match russh::keys::load_secret_key(path, None) {
            Ok(k) => k,
            Err(e) if target.identity_from_host => {
                return Err(auth_err(format!(
                    "cannot use identity file '{}': {e} (a passphrase-protected key must be loaded into ssh-agent, and `identity` removed)",
                    path.display()
                )));
            }
            Err(e) => {
                refused.push(format!("'{}' unreadable ({e})", path.display()));
                continue;
            }
        };
        let fp = key.public_key().fingerprint(russh::keys::HashAlg::Sha256);
        let algo = key.algorithm().to_string();
        let hash = rsa_hash(handle, key.algorithm().is_rsa())
            .await
            .map_err(|e| auth_err(e.to_string()))?;
        let res = handle
            .authenticate_publickey(
                target.user.clone(),
                PrivateKeyWithHashAlg::new(Arc::new(key), hash),
            )
            .await
            .map_err(|e| auth_err(e.to_string()))?;
        if res.success() {
            return Ok(format!("key {algo}"));
        }
        refused.push(format!("{algo} key '{}' ({fp}) refused", path.display()));
    }
    if use_agent {
        match russh::keys::agent::client::AgentClient::connect_env().await {
            Ok(mut agent) => {
                let ids = agent.request_identities().await.unwrap_or_default();
                for id in ids {
                    let russh::keys::agent::AgentIdentity::PublicKey { key, .. } = id else {
                        continue;
                    };
                    let hash = rsa_hash(handle, key.algorithm().is_rsa())
                        .await
                        .map_err(|e| auth_err(e.to_string()))?;
                    let fp = key.fingerprint(russh::keys::HashAlg::Sha256);
                    match handle
                        .authenticate_publickey_with(target.user.clone(), key, hash, &mut agent)
                        .await
                    {
                        Ok(r) if r.success() => return Ok("agent".into()),
                        Ok(_) => refused.push(format!("agent key {fp} refused")),
                        Err(e) => refused.push(format!("agent key {fp}: {e}")),
                    }
                }
            }
            Err(e) => refused.push(format!("ssh agent unreachable ({e})")),
        }
    }
    if refused.is_empty() {
        return Err(auth_err(
            "no key to offer: set `identity = \"PATH\"` for this host, start ssh-agent (SSH_AUTH_SOCK), or create ~/.ssh/id_ed25519"
                .into(),
        ));
    }
    Err(auth_err(format!(
        "{}; add the public key to ~{}/.ssh/authorized_keys on the host, or name another with `identity = \"PATH\"`",
        refused.join("; "),
        target.user
    )))
}

/// Lower-case hex sha256 of a local file (cached per path, size and mtime
/// for the life of the process, since every host ships the same binary).
async fn file_sha256(name: &str, path: &Path) -> Result<String> {
    type Key = (PathBuf, u64, Option<SystemTime>);
    static CACHE: Mutex<Vec<(Key, String)>> = Mutex::new(Vec::new());
    let local = |message: String| Error::Local {
        host: name.into(),
        path: path.to_path_buf(),
        message,
    };
    let meta = tokio::fs::metadata(path)
        .await
        .map_err(|e| local(e.to_string()))?;
    let key: Key = (path.to_path_buf(), meta.len(), meta.modified().ok());
    if let Some((_, h)) = CACHE
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .find(|(k, _)| *k == key)
    {
        return Ok(h.clone());
    }
    let p = path.to_path_buf();
    let hash = tokio::task::spawn_blocking(move || -> std::io::Result<String> {
        use std::io::Read;
        let mut f = std::fs::File::open(&p)?;
        let mut h = Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = f.read(&mut buf)?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
        }
        Ok(crate::worker::hex(&h.finalize()))
    })
    .await
    .map_err(|e| local(e.to_string()))?
    .map_err(|e| local(e.to_string()))?;
    CACHE
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push((key, hash.clone()));
    Ok(hash)
}

/// The remote command that makes the cache folders (mode 0700) and prints
/// the cache folder and the sha256 of the files already there.
fn probe_command(binary_sha: &str, model_sha: Option<&str>) -> String {
    let bin = format!(
        "\"$c\"/bin/{}/{}",
        quote(binary_sha),
        quote(REMOTE_BINARY_NAME)
    );
    let mut cmd = format!(
        "umask 077 && c=\"${{XDG_CACHE_HOME:-$HOME/.cache}}/herd\" && mkdir -p \"$c\"/bin/{} \"$c\"/models && {{ find \"$c\" -name '*.tmp.*' -type f -mmin +{STALE_UPLOAD_MINUTES} -exec rm -f {{}} + 2>/dev/null || true; }} && printf 'cache=%s\\n' \"$c\" && printf 'bin=%s\\n' \"$(sha256sum < {bin} 2>/dev/null)\"",
        quote(binary_sha)
    );
    if let Some(m) = model_sha {
        cmd.push_str(&format!(
            " && printf 'model=%s\\n' \"$(sha256sum < \"$c\"/models/{} 2>/dev/null)\"",
            quote(&format!("{m}.safetensors"))
        ));
    }
    cmd
}

#[derive(Debug, PartialEq)]
struct Probed {
    cache: String,
    binary_sha: Option<String>,
    model_sha: Option<String>,
}

fn parse_probe(out: &str) -> std::result::Result<Probed, String> {
    let mut cache = None;
    let mut binary_sha = None;
    let mut model_sha = None;
    for line in out.lines() {
        let first_word = |v: &str| v.split_whitespace().next().map(str::to_string);
        if let Some(v) = line.strip_prefix("cache=") {
            cache = Some(v.to_string());
        } else if let Some(v) = line.strip_prefix("bin=") {
            binary_sha = first_word(v);
        } else if let Some(v) = line.strip_prefix("model=") {
            model_sha = first_word(v);
        }
    }
    let cache = cache.ok_or_else(|| format!("the cache probe printed no folder: {out:?}"))?;
    if !cache.starts_with('/') {
        return Err(format!(
            "the remote cache folder '{cache}' is not absolute ($HOME unset?)"
        ));
    }
    Ok(Probed {
        cache,
        binary_sha,
        model_sha,
    })
}

/// Uploads `local` to `remote` under a temporary name, checks its sha256
/// there against `sha`, sets `mode` and moves it into place. Returns the
/// bytes sent.
async fn upload(
    name: &str,
    handle: &Handle<Client>,
    local: &Path,
    remote: &str,
    sha: &str,
    mode: &str,
) -> Result<u64> {
    let remote_err = |message: String| Error::Remote {
        host: name.into(),
        message,
    };
    let local_err = |message: String| Error::Local {
        host: name.into(),
        path: local.to_path_buf(),
        message,
    };
    let nonce = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let tmp = format!("{remote}.tmp.{}.{nonce}", std::process::id());
    let (t, f, s, m) = (quote(&tmp), quote(remote), quote(sha), quote(mode));
    let cmd = format!(
        "umask 077 && cat > {t} && h=$(sha256sum < {t}) && h=${{h%% *}} && {{ [ \"$h\" = {s} ] || {{ printf 'sha256 of the upload is %s, expected %s\\n' \"$h\" {s} >&2; false; }}; }} && chmod {m} {t} && mv -f {t} {f} || {{ rm -f {t}; exit 3; }}"
    );
    let mut file = tokio::fs::File::open(local)
        .await
        .map_err(|e| local_err(e.to_string()))?;
    let size = file
        .metadata()
        .await
        .map_err(|e| local_err(e.to_string()))?
        .len();
    let limit = COMMAND_TIMEOUT + Duration::from_secs(size / MIN_UPLOAD_BYTES_PER_S);
    let channel = handle
        .channel_open_session()
        .await
        .map_err(|e| remote_err(format!("cannot open a channel: {e}")))?;
    channel
        .exec(true, cmd)
        .await
        .map_err(|e| remote_err(format!("cannot start the upload: {e}")))?;
    let (rx, tx) = channel.split();
    let reader = tokio::spawn(collect(rx));
    let send = async {
        let mut sent = 0u64;
        let mut buf = vec![0u8; UPLOAD_PIECE_BYTES];
        loop {
            let n = file
                .read(&mut buf)
                .await
                .map_err(|e| local_err(e.to_string()))?;
            if n == 0 {
                break;
            }
            tx.data_bytes(buf[..n].to_vec())
                .await
                .map_err(|e| remote_err(format!("upload to {remote} broke off: {e}")))?;
            sent += n as u64;
        }
        let _ = tx.eof().await;
        Ok::<u64, Error>(sent)
    };
    let outcome = tokio::time::timeout(limit, async {
        let sent = send.await?;
        let (code, _out, err) = reader
            .await
            .map_err(|e| remote_err(format!("upload task failed: {e}")))?;
        Ok::<_, Error>((sent, code, err))
    })
    .await
    .map_err(|_| {
        remote_err(format!(
            "upload of '{}' to {remote} took over {}s",
            local.display(),
            limit.as_secs()
        ))
    })??;
    let (sent, code, err) = outcome;
    if code != Some(0) {
        return Err(remote_err(format!(
            "upload of '{}' to {remote} failed (exit {}): {}",
            local.display(),
            code.map(|c| c.to_string()).unwrap_or_else(|| "none".into()),
            err.trim()
        )));
    }
    Ok(sent)
}

/// Reads a channel to its end: exit status, stdout, stderr.
async fn collect(mut rx: russh::ChannelReadHalf) -> (Option<u32>, String, String) {
    let mut out = Vec::new();
    let mut err = Vec::new();
    let mut code = None;
    while let Some(msg) = rx.wait().await {
        match msg {
            ChannelMsg::Data { data } => out.extend_from_slice(&data),
            ChannelMsg::ExtendedData { data, .. } => err.extend_from_slice(&data),
            ChannelMsg::ExitStatus { exit_status } => code = Some(exit_status),
            ChannelMsg::Close => break,
            _ => {}
        }
    }
    (
        code,
        String::from_utf8_lossy(&out).into_owned(),
        String::from_utf8_lossy(&err).into_owned(),
    )
}

/// Runs `command` and collects its output, within `limit`.
async fn exec_capture(
    handle: &Handle<Client>,
    command: &str,
    limit: Duration,
) -> std::result::Result<(Option<u32>, String, String), String> {
    tokio::time::timeout(limit, async {
        let channel = handle
            .channel_open_session()
            .await
            .map_err(|e| format!("cannot open a channel: {e}"))?;
        channel
            .exec(true, command)
            .await
            .map_err(|e| format!("cannot run a command: {e}"))?;
        let (rx, _tx) = channel.split();
        Ok(collect(rx).await)
    })
    .await
    .map_err(|_| format!("a remote command took over {}s", limit.as_secs()))?
}

/// The remote command line that starts a worker: `exec env K=V ... BIN worker`.
pub fn worker_command(
    binary: &str,
    env: &[(String, String)],
) -> std::result::Result<String, String> {
    let mut cmd = String::from("exec env ");
    cmd.push_str(&quote("NODEVICE_SELECT=1"));
    for (k, v) in env {
        if !is_env_name(k) {
            return Err(format!("'{k}' is not a valid environment variable name"));
        }
        if has_nul(v) {
            return Err(format!("the value of {k} holds a NUL byte"));
        }
        cmd.push(' ');
        cmd.push_str(&quote(&format!("{k}={v}")));
    }
    cmd.push(' ');
    cmd.push_str(&quote(binary));
    cmd.push_str(" worker");
    Ok(cmd)
}

async fn run_worker(
    name: &str,
    mut stage: watch::Receiver<Stage>,
    env: Vec<(String, String)>,
    mut stdin: tokio::io::DuplexStream,
    mut stdout: tokio::io::DuplexStream,
    mut stderr: tokio::io::DuplexStream,
    mut kill_rx: oneshot::Receiver<()>,
) -> String {
    let ready = tokio::select! {
        r = wait_ready(name, &mut stage) => match r {
            Ok(r) => r,
            Err(e) => return e.to_string(),
        },
        _ = &mut kill_rx => return "killed by the coordinator before it started".into(),
    };
    let cmd = match worker_command(&ready.binary, &env) {
        Ok(c) => c,
        Err(e) => return format!("host '{}': {e}", ready.name),
    };
    let channel = match ready.handle.channel_open_session().await {
        Ok(c) => c,
        Err(e) => {
            return format!(
                "host '{}': cannot open a channel on {}: {e}",
                ready.name, ready.addr
            );
        }
    };
    if let Err(e) = channel.exec(true, cmd).await {
        return format!("host '{}': cannot start the worker: {e}", ready.name);
    }
    let (mut rx, tx) = channel.split();
    let (killed_tx, mut killed_rx) = oneshot::channel::<()>();
    let writer = tokio::spawn(async move {
        let mut buf = vec![0u8; 64 << 10];
        let mut input_open = true;
        while input_open {
            tokio::select! {
                _ = &mut kill_rx => break,
                n = stdin.read(&mut buf) => match n {
                    Ok(0) | Err(_) => input_open = false,
                    Ok(n) => {
                        if tx.data_bytes(buf[..n].to_vec()).await.is_err() {
                            input_open = false;
                        }
                    }
                },
            }
        }
        let _ = tx.eof().await;
        if !kill_rx.is_terminated() {
            // The worker exits on its own at end of input; a kill still counts.
            let _ = (&mut kill_rx).await;
        }
        let _ = tx.signal(Sig::KILL).await;
        let _ = killed_tx.send(());
        tokio::time::sleep(KILL_GRACE).await;
        let _ = tx.close().await;
    });
    let mut ended: Option<String> = None;
    let mut kill_deadline: Option<tokio::time::Instant> = None;
    loop {
        let msg = tokio::select! {
            m = rx.wait() => m,
            _ = &mut killed_rx, if kill_deadline.is_none() => {
                kill_deadline = Some(tokio::time::Instant::now() + KILL_GRACE);
                continue;
            }
            _ = sleep_until(kill_deadline), if kill_deadline.is_some() => {
                ended.get_or_insert_with(|| format!(
                    "killed by the coordinator (no exit status from '{}' within {}s)",
                    ready.name,
                    KILL_GRACE.as_secs()
                ));
                break;
            }
        };
        match msg {
            Some(ChannelMsg::Data { data }) => {
                let _ = stdout.write_all(&data).await;
            }
            Some(ChannelMsg::ExtendedData { data, ext: 1 }) => {
                let _ = stderr.write_all(&data).await;
            }
            Some(ChannelMsg::ExitStatus { exit_status }) => {
                ended = Some(match exit_status {
                    0 => "exited".into(),
                    127 => format!(
                        "exited with status 127 (the shell on '{}' could not run {})",
                        ready.name, ready.binary
                    ),
                    c => format!("exited with status {c}"),
                });
            }
            Some(ChannelMsg::ExitSignal { signal_name, .. }) => {
                ended = Some(format!("killed by signal {signal_name:?}"));
            }
            Some(ChannelMsg::Eof) => {
                let _ = stdout.shutdown().await;
            }
            Some(ChannelMsg::Failure) => {
                ended.get_or_insert_with(|| {
                    format!(
                        "host '{}' refused to run the worker (exec request denied by sshd)",
                        ready.name
                    )
                });
            }
            Some(ChannelMsg::Close) => break,
            Some(_) => {}
            None => break,
        }
    }
    writer.abort();
    drop(stdout);
    drop(stderr);
    match ended {
        Some(r) => r,
        None if ready.handle.is_closed() => {
            format!("lost: the connection to {} closed", ready.addr)
        }
        None => "ended without an exit status (channel closed)".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_probe_output_gives_the_cache_folder_and_the_hashes_found() {
        let p = parse_probe("cache=/root/.cache/herd\nbin=abc  -\nmodel=\n").unwrap();
        assert_eq!(
            p,
            Probed {
                cache: "/root/.cache/herd".into(),
                binary_sha: Some("abc".into()),
                model_sha: None,
            }
        );
        assert!(
            parse_probe("cache=.cache/herd\n")
                .unwrap_err()
                .contains("not absolute")
        );
        assert!(parse_probe("").is_err());
    }

    #[test]
    fn the_worker_command_quotes_every_value_and_refuses_bad_env_names() {
        let cmd = worker_command("/c/bin/x y/herd", &[("A".into(), "1; rm -rf /".into())]).unwrap();
        assert_eq!(
            cmd,
            "exec env 'NODEVICE_SELECT=1' 'A=1; rm -rf /' '/c/bin/x y/herd' worker"
        );
        assert!(worker_command("/b", &[("A B".into(), "1".into())]).is_err());
    }

    #[test]
    fn the_probe_removes_stale_temporary_uploads_but_not_fresh_ones() {
        let home = tempfile::tempdir().unwrap();
        let bin = home.path().join(".cache/herd/bin/0123");
        std::fs::create_dir_all(&bin).unwrap();
        let stale = bin.join("herd.tmp.1.2");
        let fresh = bin.join("herd.tmp.3.4");
        let kept = bin.join("herd");
        for f in [&stale, &fresh, &kept] {
            std::fs::write(f, b"x").unwrap();
        }
        let old = SystemTime::now() - Duration::from_secs(60 * (STALE_UPLOAD_MINUTES as u64 + 5));
        for f in [&stale, &kept] {
            std::fs::File::options()
                .write(true)
                .open(f)
                .unwrap()
                .set_modified(old)
                .unwrap();
        }
        let out = std::process::Command::new("/bin/sh")
            .arg("-c")
            .arg(probe_command("0123", None))
            .env("HOME", home.path())
            .env_remove("XDG_CACHE_HOME")
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        assert!(!stale.exists(), "a stale upload is left");
        assert!(fresh.exists() && kept.exists());
        let p = parse_probe(&String::from_utf8_lossy(&out.stdout)).unwrap();
        assert!(p.binary_sha.is_some(), "the cached binary is hashed");
    }

    #[test]
    fn the_probe_command_runs_in_sh_and_reports_missing_files_as_empty() {
        let home = tempfile::tempdir().unwrap();
        let out = std::process::Command::new("/bin/sh")
            .arg("-c")
            .arg(probe_command("0123", Some("4567")))
            .env("HOME", home.path())
            .env_remove("XDG_CACHE_HOME")
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        let p = parse_probe(&String::from_utf8_lossy(&out.stdout)).unwrap();
        let cache = home.path().join(".cache/herd");
        assert_eq!(p.cache, cache.display().to_string());
        assert_eq!((p.binary_sha, p.model_sha), (None, None));
        use std::os::unix::fs::PermissionsExt;
        for d in ["", "bin", "bin/0123", "models"] {
            let mode = std::fs::metadata(cache.join(d))
                .unwrap()
                .permissions()
                .mode()
                & 0o777;
            assert_eq!(mode, 0o700, "{d}");
        }
    }
}
