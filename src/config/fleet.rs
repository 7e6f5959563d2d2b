//! Fleet files (`hosts.toml`), resolved: host names unique, at most one
//! local host, the keys of one host kind refused on another, ssh addresses
//! and ports checked; every error names the file, line and column.
//!
//! A path starting with `~/` is kept as written; the fleet room expands it
//! against the user's home folder. Pure: no file system, no clock, no
//! environment.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use toml::Spanned;

use super::Result;
use super::raw;
pub use super::slurm::{
    DEFAULT_NODE_CACHE, DEFAULT_START_TIMEOUT_SECS, MAX_ARG_LEN, MAX_EXTRA_ARGS, MAX_PER_TASK,
    Ship, SlurmHost,
};
use super::source::{Source, quoted};

pub const DEFAULT_SLOTS: i64 = 1;
pub const MAX_SLOTS: i64 = 256;
pub const MAX_THREADS: i64 = 4_096;

/// Every host kind: the one table that knows them (with `fleet::start`,
/// which starts them). A kind is its name, the `[[host]]` keys only it
/// reads, what its hosts do (for messages) and how its settings resolve.
pub(super) const HOST_KINDS: &[HostKind] = &[
    HostKind {
        name: "local",
        keys: &[],
        does: "runs its workers as local processes",
        resolve: |_, _, _| Ok(Transport::Local),
    },
    HostKind {
        name: "ssh",
        keys: &[
            "address",
            "port",
            "user",
            "identity",
            "known_hosts",
            "trust",
            "worker_binary",
            "reconnect_window",
        ],
        does: "runs its workers over SSH",
        resolve: |src, entry, name| src.ssh_host(entry, name).map(Transport::Ssh),
    },
    HostKind {
        name: "slurm",
        keys: &[
            "partition",
            "time",
            "account",
            "qos",
            "gres",
            "gpus_per_task",
            "cpus_per_task",
            "extra_args",
            "ship",
            "requeue",
            "start_timeout",
            "node_cache",
        ],
        does: "runs its workers as job steps of a Slurm allocation",
        resolve: |src, entry, name| src.slurm_host(entry, name).map(Transport::Slurm),
    },
];
const TRUSTS: &[(&str, Trust)] = &[("strict", Trust::Strict), ("accept-new", Trust::AcceptNew)];
pub(crate) const DEVICES: &[(&str, Device)] = &[
    ("auto", Device::Auto),
    ("gpu", Device::Gpu),
    ("wgpu-cpu", Device::WgpuCpu),
    ("cpu", Device::Cpu),
];

/// One kind of host.
pub(super) struct HostKind {
    name: &'static str,
    /// The `[[host]]` keys of this kind (besides the ones every host has).
    pub keys: &'static [&'static str],
    /// What a host of this kind does, for messages.
    does: &'static str,
    /// Its transport settings from its `[[host]]` entry and name.
    resolve: fn(&Source<'_>, &Spanned<raw::HostTable>, &str) -> Result<Transport>,
}

/// The machines a job runs on (`hosts.toml`).
#[derive(Clone, Debug, PartialEq)]
pub struct Fleet {
    pub file: PathBuf,
    pub hosts: Vec<Host>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Host {
    pub name: String,
    pub transport: Transport,
    /// Worker processes on this host.
    pub slots: u32,
    pub device: Device,
    /// CPU threads each worker may use on the native CPU path; `None`: the
    /// host's cores divided by its slots. A Slurm host's default is its
    /// `cpus_per_task` (1 when unset): what each task is given.
    pub threads: Option<u32>,
    /// For the cost figure; 0 when not set.
    pub cost_per_hour: f64,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Transport {
    /// Workers are child processes of the coordinator.
    Local,
    Ssh(SshHost),
    /// Workers are job steps of one Slurm allocation.
    Slurm(SlurmHost),
}

#[derive(Clone, Debug, PartialEq)]
pub struct SshHost {
    /// `host:port`, `host`, or an alias from ~/.ssh/config.
    pub address: String,
    pub user: Option<String>,
    /// Identity file; `None`: the ssh agent (or ~/.ssh/config's IdentityFile).
    pub identity: Option<PathBuf>,
    /// known_hosts file; `None`: ~/.ssh/known_hosts (or ~/.ssh/config's).
    pub known_hosts: Option<PathBuf>,
    pub trust: Trust,
    /// A worker binary for another architecture; `None`: ship herd itself.
    pub worker_binary: Option<PathBuf>,
    /// How long a dropped connection is retried (with backoff) before the
    /// host counts as lost; [`DEFAULT_RECONNECT_WINDOW_SECS`] unless set.
    pub reconnect_window_secs: u64,
}

/// The reconnect window of an SSH host that names none.
pub const DEFAULT_RECONNECT_WINDOW_SECS: u64 = 30;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Trust {
    /// Only keys already in known_hosts (the default).
    Strict,
    /// Learn an unknown key on first use; a changed key is still refused.
    AcceptNew,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Device {
    /// A real GPU adapter when there is one, else the native CPU path.
    Auto,
    /// A real GPU adapter, or an error naming the host.
    Gpu,
    /// wgpu on a CPU-type adapter (lavapipe): for testing the shaders.
    WgpuCpu,
    /// The native CPU path.
    Cpu,
}

impl Device {
    pub fn name(self) -> &'static str {
        match self {
            Device::Auto => "auto",
            Device::Gpu => "gpu",
            Device::WgpuCpu => "wgpu-cpu",
            Device::Cpu => "cpu",
        }
    }
}

/// Parses and checks a fleet file (`hosts.toml`). `file` is its path: it names
/// the file in errors and is the base of the hosts' relative paths.
pub fn parse_fleet(text: &str, file: &Path) -> Result<Fleet> {
    let src = Source { text, file };
    let raw: raw::FleetFile = toml::from_str(text).map_err(|e| src.toml_error(&e))?;
    src.fleet(raw)
}

impl Source<'_> {
    fn fleet(&self, raw: raw::FleetFile) -> Result<Fleet> {
        let entries = raw.host.unwrap_or_default();
        if entries.is_empty() {
            return Err(self.error(
                0..0,
                "no [[host]] entries; expected at least one, e.g. \
                 [[host]] name = \"local\" kind = \"local\"",
            ));
        }
        let mut hosts: Vec<Host> = Vec::with_capacity(entries.len());
        // name -> line of the host that uses it
        let mut names: BTreeMap<String, usize> = BTreeMap::new();
        let mut local: Option<(String, usize)> = None;
        for entry in &entries {
            let host = self.host(entry)?;
            let raw = entry.get_ref();
            let line = self.line_of(&raw.name.span());
            if let Some(first) = names.insert(host.name.clone(), line) {
                return Err(self.error(
                    raw.name.span(),
                    format!(
                        "host name '{}' on line {line} is already used by the host on line {first}; \
                         expected unique host names",
                        host.name
                    ),
                ));
            }
            if host.transport == Transport::Local {
                if let Some((first_name, first_line)) = &local {
                    return Err(self.error(
                        raw.kind.span(),
                        format!(
                            "host '{}' is a second kind = 'local' host (the first is '{first_name}' \
                             on line {first_line}); expected at most one local host (raise its \
                             slots instead)",
                            host.name
                        ),
                    ));
                }
                local = Some((host.name.clone(), line));
            }
            hosts.push(host);
        }
        Ok(Fleet {
            file: self.file.to_path_buf(),
            hosts,
        })
    }

    fn host(&self, entry: &Spanned<raw::HostTable>) -> Result<Host> {
        let raw = entry.get_ref();
        let name = self.name(&raw.name, "[[host]] name")?;
        let label = |key: &str| format!("host '{name}': {key}");
        if let Some(p) = &raw.password {
            return Err(self.error(
                p.span(),
                format!(
                    "host '{name}': 'password' is refused: passwords are never read from \
                     files; expected a key file (identity = \"~/.ssh/id_ed25519\") or the ssh \
                     agent (no identity)"
                ),
            ));
        }
        let kinds: Vec<(&str, &HostKind)> = HOST_KINDS.iter().map(|k| (k.name, k)).collect();
        let kind = self.choice(&raw.kind, &label("kind"), "a host kind", &kinds)?;
        if let Some((key, span)) = raw
            .kind_keys()
            .into_iter()
            .find(|(key, _)| !kind.keys.contains(key))
        {
            let owners = quoted(
                HOST_KINDS
                    .iter()
                    .filter(|k| k.keys.contains(&key))
                    .map(|k| k.name),
            );
            return Err(self.error(
                span,
                format!(
                    "host '{name}': {key} is only for kind = {owners}; a kind = '{}' host \
                     {} (expected {key} removed, or kind = {owners})",
                    kind.name, kind.does
                ),
            ));
        }
        let transport = (kind.resolve)(self, entry, &name)?;
        let slots = self.int_or(
            &raw.slots,
            DEFAULT_SLOTS,
            &label("slots"),
            1,
            Some(MAX_SLOTS),
        )?;
        let device = match &raw.device {
            None => Device::Auto,
            Some(v) => self.choice(v, &label("device"), "a device", DEVICES)?,
        };
        let threads = raw
            .threads
            .as_ref()
            .map(|v| self.int(v, &label("threads"), 1, Some(MAX_THREADS)))
            .transpose()?
            .map(|t| t as u32)
            .or(match &transport {
                Transport::Slurm(s) => Some(s.cpus_per_task.unwrap_or(1)),
                _ => None,
            });
        let cost_per_hour = raw.cost_per_hour.as_ref().map_or(Ok(0.0), |v| {
            self.number(v, &label("cost_per_hour"), 0.0, None)
        })?;
        Ok(Host {
            name,
            transport,
            slots: slots as u32,
            device,
            threads,
            cost_per_hour,
        })
    }

    fn ssh_host(&self, entry: &Spanned<raw::HostTable>, name: &str) -> Result<SshHost> {
        let raw = entry.get_ref();
        let Some(address) = &raw.address else {
            return Err(self.error(
                entry.span(),
                format!(
                    "host '{name}' is kind = 'ssh' but has no address; expected \
                     address = \"host\", \"host:port\" or an alias from ~/.ssh/config"
                ),
            ));
        };
        let text = address.get_ref();
        if text.is_empty() || text.chars().any(char::is_whitespace) {
            return Err(self.error(
                address.span(),
                format!(
                    "host '{name}': address = '{text}' is not a host address; expected \
                     \"host\", \"host:port\" or an alias from ~/.ssh/config, without spaces"
                ),
            ));
        }
        let written_port = split_port(text);
        if let Some(port) = written_port {
            if !port.parse::<u16>().is_ok_and(|p| p >= 1) {
                return Err(self.error(
                    address.span(),
                    format!(
                        "host '{name}': address = '{text}' has the port '{port}'; expected a \
                         port from 1 to 65535"
                    ),
                ));
            }
        }
        let address = match &raw.port {
            None => text.clone(),
            Some(port) => {
                let p = self.int(port, &format!("host '{name}': port"), 1, Some(65_535))?;
                if written_port.is_some() {
                    return Err(self.error(
                        port.span(),
                        format!(
                            "host '{name}': port = '{p}' is given, but address = '{text}' already \
                             names a port; expected the port in one place only"
                        ),
                    ));
                }
                if text.contains(':') {
                    format!("[{text}]:{p}")
                } else {
                    format!("{text}:{p}")
                }
            }
        };
        let user = match &raw.user {
            None => None,
            Some(u) if u.get_ref().is_empty() || u.get_ref().chars().any(char::is_whitespace) => {
                return Err(self.error(
                    u.span(),
                    format!(
                        "host '{name}': user = '{}' is not a user name; expected a login name \
                         without spaces (or no user key for the local user name)",
                        u.get_ref()
                    ),
                ));
            }
            Some(u) => Some(u.get_ref().clone()),
        };
        let path = |v: &Option<Spanned<String>>, key: &str| {
            v.as_ref()
                .map(|p| self.path(p, &format!("host '{name}': {key}")))
                .transpose()
        };
        Ok(SshHost {
            address,
            user,
            identity: path(&raw.identity, "identity")?,
            known_hosts: path(&raw.known_hosts, "known_hosts")?,
            trust: match &raw.trust {
                None => Trust::Strict,
                Some(v) => {
                    self.choice(v, &format!("host '{name}': trust"), "a trust mode", TRUSTS)?
                }
            },
            worker_binary: path(&raw.worker_binary, "worker_binary")?,
            reconnect_window_secs: match &raw.reconnect_window {
                None => DEFAULT_RECONNECT_WINDOW_SECS,
                Some(v) => super::parse_ttl(v.get_ref()).map_err(|message| {
                    self.error(
                        v.span(),
                        format!("host '{name}': reconnect_window = {message}"),
                    )
                })?,
            },
        })
    }
}

/// The port written in an address (`h:22`, `[::1]:22`), if any. A bare IPv6
/// address (more than one `:`) and an ssh alias have none.
fn split_port(address: &str) -> Option<&str> {
    if let Some(rest) = address.strip_prefix('[') {
        return rest.split_once("]:").map(|(_, port)| port);
    }
    match address.matches(':').count() {
        1 => address.split_once(':').map(|(_, port)| port),
        _ => None,
    }
}
