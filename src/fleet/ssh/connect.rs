//! Reaching an SSH host: TCP connect and key exchange, the host key checked
//! against known_hosts, then authentication with an identity file or the
//! agent, each within its timeout.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use russh::client::{self, Handle};
use russh::keys::{PrivateKeyWithHashAlg, PublicKeyOrCertificate};

use super::hostkey::{self, KeyCheck};
use super::{
    AUTH_TIMEOUT, CONNECT_TIMEOUT, Error, HostStatus, KEEPALIVE_INTERVAL, KEEPALIVE_MAX, Result,
    Target, lock,
};

/// Connects, checks the host key and authenticates, noting each step in
/// `status`.
pub(super) async fn open(
    name: &str,
    target: &Target,
    status: &Mutex<HostStatus>,
) -> Result<Handle<Client>> {
    let started = Instant::now();
    let mut handle = connect(name, target, status).await?;
    let how =
        match tokio::time::timeout(AUTH_TIMEOUT, authenticate(&mut handle, name, target)).await {
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
                    addr: target.addr(),
                    message: format!("no answer within {}s", AUTH_TIMEOUT.as_secs()),
                });
            }
        };
    let mut s = lock(status);
    s.auth = how;
    s.connect_time = Some(started.elapsed());
    Ok(handle)
}

/// The russh client handler: checks the server's key against known_hosts.
pub(super) struct Client {
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
