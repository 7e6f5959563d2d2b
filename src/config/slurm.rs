//! The settings of a `kind = "slurm"` host: what its allocation asks Slurm
//! for, how the worker binary and the model reach its nodes, and how long
//! herd waits for the allocation to start. Every value ends up as one word
//! of a command's argument vector (no shell reads it), so the checks here
//! are about what Slurm can take, not about quoting.
//!
//! Pure: no file system, no clock, no environment.

use std::path::PathBuf;

use toml::Spanned;

use super::Result;
use super::raw;
use super::source::Source;

/// The longest a host waits for its allocation to start when it names no
/// `start_timeout`.
pub const DEFAULT_START_TIMEOUT_SECS: u64 = 600;
/// The node-local folder the shipped files are cached under (as
/// `<node_cache>/herd-<uid>`) when the host names none.
pub const DEFAULT_NODE_CACHE: &str = "/tmp";
/// Most GPUs or CPUs one worker task may ask for.
pub const MAX_PER_TASK: i64 = 1_024;
/// Most extra arguments to the allocation command, and the longest one.
pub const MAX_EXTRA_ARGS: usize = 64;
pub const MAX_ARG_LEN: usize = 1_024;

const SHIPS: &[(&str, Ship)] = &[("sbcast", Ship::Sbcast), ("shared", Ship::Shared)];

/// A host whose workers are job steps of one Slurm allocation.
#[derive(Clone, Debug, PartialEq)]
pub struct SlurmHost {
    /// `--partition`; `None`: the cluster's default partition.
    pub partition: Option<String>,
    /// `--time` (Slurm's forms: `MM`, `MM:SS`, `HH:MM:SS`, `D-HH:MM:SS`, ...);
    /// `None`: the partition's default.
    pub time: Option<String>,
    pub account: Option<String>,
    pub qos: Option<String>,
    /// `--gres` for the allocation (per node).
    pub gres: Option<String>,
    /// `--gpus-per-task`, for the allocation and every worker step.
    pub gpus_per_task: Option<u32>,
    /// `--cpus-per-task`, for the allocation and every worker step.
    pub cpus_per_task: Option<u32>,
    /// More options for the allocation command, each one word
    /// (`--begin=now+1hour`, `--constraint=a100`).
    pub extra_args: Vec<String>,
    pub ship: Ship,
    /// Ask for a new allocation when the allocation ends before the run does.
    pub requeue: bool,
    /// How long the allocation may wait in the queue before the host fails.
    pub start_timeout_secs: u64,
    /// The node-local folder holding herd's cache (`ship = "sbcast"`).
    pub node_cache: PathBuf,
}

/// How the worker binary and the model reach the allocation's nodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ship {
    /// `sbcast` into a node-local content-addressed cache.
    Sbcast,
    /// Used where they are: the coordinator's paths are on a file system
    /// every node mounts at the same place.
    Shared,
}

impl Ship {
    pub fn name(self) -> &'static str {
        match self {
            Ship::Sbcast => "sbcast",
            Ship::Shared => "shared",
        }
    }
}

impl Source<'_> {
    pub(super) fn slurm_host(
        &self,
        entry: &Spanned<raw::HostTable>,
        name: &str,
    ) -> Result<SlurmHost> {
        let raw = entry.get_ref();
        let label = |key: &str| format!("host '{name}': {key}");
        let word = |v: &Option<Spanned<String>>, key: &str| {
            v.as_ref()
                .map(|v| self.slurm_word(v, &label(key)))
                .transpose()
        };
        let per_task = |v: &Option<Spanned<i64>>, key: &str| {
            v.as_ref()
                .map(|v| {
                    self.int(v, &label(key), 1, Some(MAX_PER_TASK))
                        .map(|n| n as u32)
                })
                .transpose()
        };
        let time = word(&raw.time, "time")?;
        if let (Some(t), Some(v)) = (&time, &raw.time) {
            if !t
                .bytes()
                .all(|b| b.is_ascii_digit() || b == b':' || b == b'-')
            {
                return Err(self.error(
                    v.span(),
                    format!(
                        "host '{name}': time = '{t}' is not a Slurm time limit; expected \
                         minutes ('90'), 'HH:MM:SS' ('02:00:00') or 'D-HH:MM:SS'"
                    ),
                ));
            }
        }
        Ok(SlurmHost {
            partition: word(&raw.partition, "partition")?,
            time,
            account: word(&raw.account, "account")?,
            qos: word(&raw.qos, "qos")?,
            gres: word(&raw.gres, "gres")?,
            gpus_per_task: per_task(&raw.gpus_per_task, "gpus_per_task")?,
            cpus_per_task: per_task(&raw.cpus_per_task, "cpus_per_task")?,
            extra_args: match &raw.extra_args {
                None => Vec::new(),
                Some(v) => self.extra_args(v, name)?,
            },
            ship: match &raw.ship {
                None => Ship::Sbcast,
                Some(v) => self.choice(v, &label("ship"), "a way to ship", SHIPS)?,
            },
            requeue: raw.requeue.as_ref().is_some_and(|v| *v.get_ref()),
            start_timeout_secs: match &raw.start_timeout {
                None => DEFAULT_START_TIMEOUT_SECS,
                Some(v) => super::parse_ttl(v.get_ref()).map_err(|message| {
                    self.error(
                        v.span(),
                        format!("host '{name}': start_timeout = {message}"),
                    )
                })?,
            },
            node_cache: match &raw.node_cache {
                None => PathBuf::from(DEFAULT_NODE_CACHE),
                Some(v) if v.get_ref().starts_with('/') => self.path(v, &label("node_cache"))?,
                Some(v) => {
                    return Err(self.error(
                        v.span(),
                        format!(
                            "host '{name}': node_cache = '{}' is not an absolute path; \
                             expected a folder on every node, such as '/tmp' or '/scratch'",
                            v.get_ref()
                        ),
                    ));
                }
            },
        })
    }

    /// One value for a Slurm option: not empty, no spaces or control
    /// characters.
    fn slurm_word(&self, value: &Spanned<String>, label: &str) -> Result<String> {
        let s = value.get_ref();
        if s.is_empty() || s.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(self.error(
                value.span(),
                format!("{label} = '{s}' is empty or holds spaces; expected one word"),
            ));
        }
        Ok(s.clone())
    }

    fn extra_args(&self, value: &Spanned<Vec<String>>, name: &str) -> Result<Vec<String>> {
        let args = value.get_ref();
        if args.len() > MAX_EXTRA_ARGS {
            return Err(self.error(
                value.span(),
                format!(
                    "host '{name}': extra_args has {} arguments; expected at most {MAX_EXTRA_ARGS}",
                    args.len()
                ),
            ));
        }
        for a in args {
            if !a.starts_with('-') || a.len() > MAX_ARG_LEN || a.contains('\0') {
                return Err(self.error(
                    value.span(),
                    format!(
                        "host '{name}': extra_args holds '{a}'; expected options of the \
                         allocation command, each one word with its value after '=' \
                         ('--begin=now+1hour', '--constraint=a100'), at most {MAX_ARG_LEN} bytes"
                    ),
                ));
            }
        }
        Ok(args.clone())
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::super::{Transport, parse_fleet};
    use super::*;

    fn slurm(extra: &str) -> (super::super::Host, SlurmHost) {
        let text = format!("[[host]]\nname = \"c\"\nkind = \"slurm\"\n{extra}\n");
        let mut f = parse_fleet(&text, Path::new("hosts.toml")).unwrap();
        let host = f.hosts.remove(0);
        let Transport::Slurm(s) = host.transport.clone() else {
            panic!("not slurm: {host:?}");
        };
        (host, s)
    }

    fn refused(extra: &str) -> String {
        let text = format!("[[host]]\nname = \"c\"\nkind = \"slurm\"\n{extra}\n");
        parse_fleet(&text, Path::new("hosts.toml"))
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn a_bare_slurm_host_takes_slurms_defaults_and_herds() {
        let (host, s) = slurm("");
        assert_eq!(host.slots, 1);
        assert_eq!(host.threads, Some(1), "one CPU per task unless asked");
        assert_eq!(s.partition, None);
        assert_eq!(s.ship, Ship::Sbcast);
        assert!(!s.requeue);
        assert_eq!(s.start_timeout_secs, DEFAULT_START_TIMEOUT_SECS);
        assert_eq!(s.node_cache, PathBuf::from(DEFAULT_NODE_CACHE));
    }

    #[test]
    fn every_key_resolves() {
        let (host, s) = slurm(
            "slots = 4\npartition = \"gpu\"\ntime = \"1-02:00:00\"\naccount = \"lab\"\n\
             qos = \"hi\"\ngres = \"gpu:2\"\ngpus_per_task = 1\ncpus_per_task = 6\n\
             extra_args = [\"--exclusive\"]\nship = \"shared\"\nrequeue = true\n\
             start_timeout = \"90s\"\nnode_cache = \"/scratch\"",
        );
        assert_eq!(host.threads, Some(6), "threads follow cpus_per_task");
        assert_eq!(
            s,
            SlurmHost {
                partition: Some("gpu".into()),
                time: Some("1-02:00:00".into()),
                account: Some("lab".into()),
                qos: Some("hi".into()),
                gres: Some("gpu:2".into()),
                gpus_per_task: Some(1),
                cpus_per_task: Some(6),
                extra_args: vec!["--exclusive".into()],
                ship: Ship::Shared,
                requeue: true,
                start_timeout_secs: 90,
                node_cache: "/scratch".into(),
            }
        );
    }

    #[test]
    fn bad_values_are_refused_naming_the_host_and_key() {
        for (extra, want) in [
            (
                "time = \"2 hours\"",
                "host 'c': time = '2 hours' is empty or holds spaces",
            ),
            (
                "time = \"2h\"",
                "host 'c': time = '2h' is not a Slurm time limit",
            ),
            ("partition = \"\"", "host 'c': partition = '' is empty"),
            (
                "cpus_per_task = 0",
                "host 'c': cpus_per_task = '0' is out of range",
            ),
            (
                "start_timeout = \"soon\"",
                "host 'c': start_timeout = 'soon' has the unknown unit",
            ),
            (
                "node_cache = \"tmp\"",
                "host 'c': node_cache = 'tmp' is not an absolute path",
            ),
            ("extra_args = [\"x\"]", "host 'c': extra_args holds 'x'"),
            (
                "address = \"h\"",
                "host 'c': address is only for kind = 'ssh'",
            ),
        ] {
            let e = refused(extra);
            assert!(e.contains(want), "{extra}: {e}");
        }
    }
}
