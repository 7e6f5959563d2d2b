//! Where and as whom to connect: a host's `address`, `user`, `identity` and
//! `known_hosts` settings merged with `~/.ssh/config`, paths expanded.
//!
//! Resolution takes the config text, the home directory and the local user
//! name as arguments, so it reads nothing by itself and is tested alone;
//! [`resolve_from_env`] supplies them from this machine.

use std::path::{Path, PathBuf};

use crate::config::{SshHost, Trust};

use super::{Error, Result};

/// The port when neither the address nor ~/.ssh/config names one.
pub const DEFAULT_PORT: u16 = 22;

/// One SSH host, ready to connect to.
#[derive(Clone, Debug, PartialEq)]
pub struct Target {
    /// The host name or IP address to connect to (after ~/.ssh/config's
    /// `HostName`); also the name looked up in known_hosts.
    pub host: String,
    pub port: u16,
    pub user: String,
    /// Identity files to offer, in order; empty: the ssh agent, then the
    /// default `~/.ssh/id_ed25519` and `~/.ssh/id_rsa`.
    pub identities: Vec<PathBuf>,
    /// Whether `identities` came from the host's own `identity` setting (then
    /// the agent is not tried).
    pub identity_from_host: bool,
    pub known_hosts: PathBuf,
    pub trust: Trust,
}

impl Target {
    /// `host:port` as a person would type it.
    pub fn addr(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// Splits `host:port`, `[v6]:port`, `host` or a bare IPv6 address.
pub fn split_address(address: &str) -> std::result::Result<(String, Option<u16>), String> {
    let address = address.trim();
    if address.is_empty() {
        return Err("the address is empty".into());
    }
    if let Some(rest) = address.strip_prefix('[') {
        let (host, after) = rest
            .split_once(']')
            .ok_or_else(|| format!("'{address}' opens '[' but never closes it"))?;
        return match after {
            "" => Ok((host.to_string(), None)),
            p => {
                let p = p
                    .strip_prefix(':')
                    .ok_or_else(|| format!("'{address}': expected ':PORT' after ']'"))?;
                Ok((host.to_string(), Some(parse_port(address, p)?)))
            }
        };
    }
    match address.matches(':').count() {
        0 => Ok((address.to_string(), None)),
        1 => {
            let (h, p) = address.split_once(':').expect("one colon");
            if h.is_empty() {
                return Err(format!("'{address}' has no host before ':'"));
            }
            Ok((h.to_string(), Some(parse_port(address, p)?)))
        }
        _ => Ok((address.to_string(), None)),
    }
}

fn parse_port(address: &str, p: &str) -> std::result::Result<u16, String> {
    match p.parse::<u16>() {
        Ok(0) | Err(_) => Err(format!(
            "'{address}': port '{p}' is not a number from 1 to 65535"
        )),
        Ok(n) => Ok(n),
    }
}

/// `~` or `~/...` under `home`; other paths unchanged.
pub fn expand_home(path: &Path, home: Option<&Path>) -> PathBuf {
    let Some(home) = home else {
        return path.to_path_buf();
    };
    match path.to_str() {
        Some("~") => home.to_path_buf(),
        Some(s) if s.starts_with("~/") => home.join(&s[2..]),
        _ => path.to_path_buf(),
    }
}

/// Resolves `ssh` (host `name`) against `ssh_config` (the text of
/// ~/.ssh/config, if any).
pub fn resolve(
    name: &str,
    ssh: &SshHost,
    ssh_config: Option<&str>,
    home: Option<&Path>,
    local_user: Option<&str>,
) -> Result<Target> {
    let bad = |message: String| Error::Config {
        host: name.to_string(),
        message,
    };
    let (alias, port) = split_address(&ssh.address).map_err(|e| bad(format!("address {e}")))?;
    let cfg = match ssh_config {
        Some(text) => russh_config::parse(text, &alias)
            .map(|c| c.host_config)
            .map_err(|e| bad(format!("~/.ssh/config: {e}")))?,
        None => Default::default(),
    };
    // Connecting directly where ssh would go through a jump host or a
    // command could reach another machine, or none: refuse instead.
    if let Some(jump) = &cfg.proxy_jump {
        return Err(bad(format!(
            "~/.ssh/config sets ProxyJump {jump} for '{alias}'; herd connects directly and does \
             not support jump hosts: give this host an address herd can reach, or run herd \
             on a machine inside that network"
        )));
    }
    if let Some(command) = &cfg.proxy_command {
        return Err(bad(format!(
            "~/.ssh/config sets ProxyCommand {command} for '{alias}'; herd connects directly \
             and does not run proxy commands: give this host an address herd can reach"
        )));
    }
    let host = cfg.hostname.clone().unwrap_or(alias);
    let port = port.or(cfg.port).unwrap_or(DEFAULT_PORT);
    let user = ssh
        .user
        .clone()
        .or(cfg.user.clone())
        .or(local_user.map(str::to_string))
        .ok_or_else(|| {
            bad("no user: set `user = \"NAME\"` for this host (or User in ~/.ssh/config)".into())
        })?;
    let (identities, identity_from_host) = match &ssh.identity {
        Some(p) => (vec![expand_home(p, home)], true),
        None => (
            cfg.identity_file
                .clone()
                .unwrap_or_default()
                .iter()
                .map(|p| expand_home(p, home))
                .collect(),
            false,
        ),
    };
    let known_hosts = match (&ssh.known_hosts, &cfg.user_known_hosts_file, home) {
        (Some(p), _, _) => expand_home(p, home),
        (None, Some(p), _) => expand_home(p, home),
        (None, None, Some(h)) => h.join(".ssh").join("known_hosts"),
        (None, None, None) => {
            return Err(bad(
                "no known_hosts file: $HOME is not set; set `known_hosts = \"PATH\"` for this host"
                    .into(),
            ));
        }
    };
    Ok(Target {
        host,
        port,
        user,
        identities,
        identity_from_host,
        known_hosts,
        trust: ssh.trust,
    })
}

/// [`resolve`] with this machine's `$HOME`, `~/.ssh/config` and `$USER`.
pub fn resolve_from_env(name: &str, ssh: &SshHost) -> Result<Target> {
    let home = std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(PathBuf::from);
    let config = home
        .as_ref()
        .and_then(|h| std::fs::read_to_string(h.join(".ssh").join("config")).ok());
    let user = std::env::var("USER")
        .ok()
        .or_else(|| std::env::var("LOGNAME").ok())
        .filter(|u| !u.is_empty());
    resolve(
        name,
        ssh,
        config.as_deref(),
        home.as_deref(),
        user.as_deref(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(address: &str) -> SshHost {
        SshHost {
            address: address.into(),
            user: None,
            identity: None,
            known_hosts: None,
            trust: Trust::Strict,
            worker_binary: None,
            reconnect_window_secs: 30,
        }
    }

    #[test]
    fn addresses_split_into_host_and_port() {
        assert_eq!(
            split_address("gpu1.lab:2222").unwrap(),
            ("gpu1.lab".into(), Some(2222))
        );
        assert_eq!(split_address("gpu1").unwrap(), ("gpu1".into(), None));
        assert_eq!(split_address("[::1]:22").unwrap(), ("::1".into(), Some(22)));
        assert_eq!(split_address("fe80::1").unwrap(), ("fe80::1".into(), None));
        assert!(split_address("gpu1:http").unwrap_err().contains("'http'"));
        assert!(split_address("gpu1:0").is_err());
        assert!(split_address("").is_err());
    }

    #[test]
    fn an_alias_from_ssh_config_gives_hostname_port_user_identity_and_known_hosts() {
        let config = "Host gpu1\n  HostName 10.0.0.7\n  Port 2200\n  User ml\n  IdentityFile /keys/gpu1\n  UserKnownHostsFile /keys/kh\n";
        let t = resolve(
            "gpu1",
            &host("gpu1"),
            Some(config),
            Some(Path::new("/home/me")),
            Some("me"),
        )
        .unwrap();
        assert_eq!(t.host, "10.0.0.7");
        assert_eq!(t.port, 2200);
        assert_eq!(t.user, "ml");
        assert_eq!(t.identities, vec![PathBuf::from("/keys/gpu1")]);
        assert!(!t.identity_from_host);
        assert_eq!(t.known_hosts, PathBuf::from("/keys/kh"));
    }

    #[test]
    fn the_hosts_own_settings_win_over_ssh_config() {
        let config = "Host gpu1\n  HostName 10.0.0.7\n  Port 2200\n  User ml\n";
        let mut h = host("gpu1:2201");
        h.user = Some("root".into());
        h.identity = Some("~/.ssh/other".into());
        h.known_hosts = Some("~/kh".into());
        let t = resolve(
            "gpu1",
            &h,
            Some(config),
            Some(Path::new("/home/me")),
            Some("me"),
        )
        .unwrap();
        assert_eq!(
            (t.host.as_str(), t.port, t.user.as_str()),
            ("10.0.0.7", 2201, "root")
        );
        assert_eq!(t.identities, vec![PathBuf::from("/home/me/.ssh/other")]);
        assert!(t.identity_from_host);
        assert_eq!(t.known_hosts, PathBuf::from("/home/me/kh"));
    }

    #[test]
    fn without_config_the_defaults_are_port_22_the_local_user_and_home_known_hosts() {
        let t = resolve(
            "a",
            &host("10.1.2.3"),
            None,
            Some(Path::new("/home/me")),
            Some("me"),
        )
        .unwrap();
        assert_eq!((t.port, t.user.as_str()), (22, "me"));
        assert!(t.identities.is_empty());
        assert_eq!(t.known_hosts, PathBuf::from("/home/me/.ssh/known_hosts"));
        assert_eq!(t.addr(), "10.1.2.3:22");
    }

    #[test]
    fn a_bad_address_names_the_host() {
        let e = resolve("gpu9", &host("gpu9:99999"), None, None, Some("me")).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("gpu9") && msg.contains("99999"), "{msg}");
    }

    #[test]
    fn a_jump_host_or_proxy_command_is_refused_not_ignored() {
        let config = "Host inner\n  HostName 10.0.0.5\n  ProxyJump bastion\nHost piped\n  ProxyCommand nc %h %p\n";
        let e = resolve("gpu1", &host("inner"), Some(config), None, Some("me"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("gpu1") && e.contains("ProxyJump bastion"), "{e}");
        let e = resolve("gpu2", &host("piped"), Some(config), None, Some("me"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("gpu2") && e.contains("ProxyCommand nc %h %p"),
            "{e}"
        );
    }

    #[test]
    fn tilde_expands_only_at_the_start() {
        let home = Some(Path::new("/h"));
        assert_eq!(expand_home(Path::new("~/a"), home), PathBuf::from("/h/a"));
        assert_eq!(expand_home(Path::new("~"), home), PathBuf::from("/h"));
        assert_eq!(
            expand_home(Path::new("/x/~/a"), home),
            PathBuf::from("/x/~/a")
        );
        assert_eq!(
            expand_home(Path::new("~bob/a"), home),
            PathBuf::from("~bob/a")
        );
    }
}
