//! Host keys checked against known_hosts, as OpenSSH does: a known key
//! passes, an unknown key is refused unless the host opted into trust on
//! first use (`trust = "accept-new"`), a changed key is always refused.
//! Refusals show the key's fingerprint and the command that trusts it.

use std::path::Path;

use russh::keys::{HashAlg, PublicKey};

use crate::config::Trust;

/// What checking a server's key against known_hosts found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyCheck {
    /// The key is recorded for this host.
    Known,
    /// The key was unknown and has been recorded (`trust = "accept-new"`).
    Learned,
    /// Refused: not recorded, and the host does not accept new keys.
    Unknown(String),
    /// Refused: another key is recorded for this host.
    Changed(String),
    /// Refused: known_hosts marks this key `@revoked`.
    Revoked(String),
    /// Refused: known_hosts could not be read or written.
    Broken(String),
}

impl KeyCheck {
    pub fn accepted(&self) -> bool {
        matches!(self, KeyCheck::Known | KeyCheck::Learned)
    }

    /// One word for the `herd hosts check` table.
    pub fn label(&self) -> &'static str {
        match self {
            KeyCheck::Known => "known",
            KeyCheck::Learned => "learned",
            KeyCheck::Unknown(_) => "UNKNOWN",
            KeyCheck::Changed(_) => "CHANGED",
            KeyCheck::Revoked(_) => "REVOKED",
            KeyCheck::Broken(_) => "ERROR",
        }
    }

    /// Why the key was refused; `None` when accepted.
    pub fn refusal(&self) -> Option<&str> {
        match self {
            KeyCheck::Unknown(m)
            | KeyCheck::Changed(m)
            | KeyCheck::Revoked(m)
            | KeyCheck::Broken(m) => Some(m),
            KeyCheck::Known | KeyCheck::Learned => None,
        }
    }
}

/// `SHA256:...`, as `ssh-keygen -l` prints it.
pub fn fingerprint(key: &PublicKey) -> String {
    key.fingerprint(HashAlg::Sha256).to_string()
}

/// The name known_hosts records for `host` on `port` (`[host]:port` unless
/// the port is 22).
pub fn known_hosts_name(host: &str, port: u16) -> String {
    if port == 22 {
        host.to_string()
    } else {
        format!("[{host}]:{port}")
    }
}

/// Checks `key`, offered by `host`:`port`, against the file `known_hosts`.
pub fn check(host: &str, port: u16, key: &PublicKey, known_hosts: &Path, trust: Trust) -> KeyCheck {
    let algo = key.algorithm().to_string();
    let fp = fingerprint(key);
    let file = known_hosts.display();
    let name = known_hosts_name(host, port);
    // A revoked key is refused whichever host offers it and whatever else
    // the file says, as OpenSSH does.
    if let Ok(text) = std::fs::read_to_string(known_hosts)
        && let Some(line) = revoked_line(&text, key)
    {
        return KeyCheck::Revoked(format!(
            "REVOKED host key: {name} offers {algo} key {fp}, which line {line} of {file} \
             marks @revoked; it is never accepted"
        ));
    }
    match russh::keys::check_known_hosts_path(host, port, key, known_hosts) {
        Ok(true) => KeyCheck::Known,
        Ok(false) => match trust {
            Trust::AcceptNew => {
                match russh::keys::known_hosts::learn_known_hosts_path(host, port, key, known_hosts)
                {
                    Ok(()) => KeyCheck::Learned,
                    Err(e) => KeyCheck::Broken(format!(
                        "cannot record the host key of {name} in {file}: {e}"
                    )),
                }
            }
            Trust::Strict => KeyCheck::Unknown(format!(
                "unknown host key: {name} offers {algo} key {fp}, which is not in {file}. \
                 If that fingerprint is the machine's (`ssh-keygen -lf /etc/ssh/ssh_host_*_key.pub` on it), \
                 trust it with `ssh-keyscan -p {port} {host} >> {file}`, \
                 or set trust = \"accept-new\" for this host in hosts.toml"
            )),
        },
        Err(russh::keys::Error::KeyChanged { line }) => KeyCheck::Changed(format!(
            "HOST KEY CHANGED: {name} now offers {algo} key {fp}, but line {line} of {file} \
             records another key for it. Someone may be intercepting the connection; \
             if the machine was reinstalled, remove the old key with \
             `ssh-keygen -R '{name}' -f {file}` and trust the new one"
        )),
        Err(e) => KeyCheck::Broken(format!("cannot read known_hosts file {file}: {e}")),
    }
}

/// The line (1-based) of `known_hosts` text that marks `key` `@revoked`.
fn revoked_line(text: &str, key: &PublicKey) -> Option<usize> {
    text.lines().enumerate().find_map(|(i, line)| {
        let rest = line.trim_start().strip_prefix("@revoked")?;
        let mut fields = rest.split_whitespace();
        let (_hosts, _algo, b64) = (fields.next()?, fields.next()?, fields.next()?);
        let revoked = russh::keys::parse_public_key_base64(b64).ok()?;
        (revoked.key_data() == key.key_data()).then_some(i + 1)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two distinct ed25519 public keys (made with ssh-keygen).
    const KEY_A: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIP7cnurltmCYsrZeoApE5ZSpChJWyS+ChHN4IhVXJpPb";
    const KEY_B: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAIqj2Ltw5hFpzyRT+gLhWYtWTowIoF0jD32xUQ1Ye9d";

    fn parse(text: &str) -> PublicKey {
        PublicKey::from_openssh(text).expect("valid key")
    }

    #[test]
    fn a_revoked_key_is_refused_even_where_a_line_trusts_it() {
        let dir = tempfile::tempdir().unwrap();
        let kh = dir.path().join("known_hosts");
        std::fs::write(
            &kh,
            format!("10.0.0.5 {KEY_A}\n@revoked * {KEY_A}\n10.0.0.6 {KEY_B}\n"),
        )
        .unwrap();
        for trust in [Trust::Strict, Trust::AcceptNew] {
            let c = check("10.0.0.5", 22, &parse(KEY_A), &kh, trust);
            assert_eq!(c.label(), "REVOKED");
            let msg = c.refusal().expect("refused");
            assert!(
                msg.contains("line 2") && msg.contains(&fingerprint(&parse(KEY_A))),
                "{msg}"
            );
        }
        assert_eq!(
            check("10.0.0.6", 22, &parse(KEY_B), &kh, Trust::Strict),
            KeyCheck::Known
        );
    }

    #[test]
    fn an_unknown_key_is_refused_with_its_fingerprint_and_the_keyscan_line() {
        let dir = tempfile::tempdir().unwrap();
        let kh = dir.path().join("known_hosts");
        let k = parse(KEY_A);
        let c = check("10.0.0.5", 2222, &k, &kh, Trust::Strict);
        let msg = c.refusal().expect("refused").to_string();
        assert_eq!(c.label(), "UNKNOWN");
        assert!(msg.contains(&fingerprint(&k)), "{msg}");
        assert!(msg.contains("SHA256:"), "{msg}");
        assert!(
            msg.contains(&format!("ssh-keyscan -p 2222 10.0.0.5 >> {}", kh.display())),
            "{msg}"
        );
        assert!(msg.contains("accept-new"), "{msg}");
        assert!(!kh.exists(), "a strict check must not write known_hosts");
    }

    #[test]
    fn accept_new_learns_once_then_knows_and_still_refuses_a_changed_key() {
        let dir = tempfile::tempdir().unwrap();
        let kh = dir.path().join("sub").join("known_hosts");
        let k = parse(KEY_A);
        assert_eq!(
            check("h", 2222, &k, &kh, Trust::AcceptNew),
            KeyCheck::Learned
        );
        assert_eq!(check("h", 2222, &k, &kh, Trust::Strict), KeyCheck::Known);
        let other = parse(KEY_B);
        let c = check("h", 2222, &other, &kh, Trust::AcceptNew);
        assert_eq!(c.label(), "CHANGED");
        let msg = c.refusal().unwrap();
        let text = std::fs::read_to_string(&kh).unwrap();
        let line = text
            .lines()
            .position(|l| l.starts_with("[h]:2222 "))
            .unwrap()
            + 1;
        assert!(msg.contains(&fingerprint(&other)), "{msg}");
        assert!(msg.contains(&format!("line {line} of")), "{msg}");
        // The same key on another port is another host.
        assert_eq!(check("h", 2223, &k, &kh, Trust::Strict).label(), "UNKNOWN");
    }
}
