//! A real Slurm cluster for the Slurm tests: its own munged, slurmctld and
//! slurmd (Debian's slurm-wlm and munge), every file in a temporary folder,
//! the daemons on loopback ports of their own. One node, `herdnode` (on
//! this machine, 8 CPUs declared), or several: one slurmd per node on this
//! machine (`slurmd -N NAME`, each on the `Port` of its `NodeName` line),
//! each in a mount namespace of its own where [`Cluster::node_cache`] is a
//! folder only that node sees, as a node-local disk would be. Every job is
//! cancelled and every daemon killed on drop.
//!
//! The client commands (and herd, which runs them) find this cluster
//! through `SLURM_CONF`: pass [`Cluster::conf`] to every command.
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long the node may take to come up idle.
const IDLE_WITHIN: Duration = Duration::from_secs(30);
pub const NODE: &str = "herdnode";
pub const CPUS: u32 = 8;

const INSTALL: &str =
    "apt-get install -y slurm-wlm munge (or run scripts/test, which installs them)";

pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub conf: PathBuf,
    names: Vec<String>,
    children: Vec<(String, Child)>,
}

/// Node `i`'s name: `herdnode`, then `herdnode1`, `herdnode2`...
fn node_name(i: usize) -> String {
    if i == 0 {
        NODE.to_string()
    } else {
        format!("{NODE}{i}")
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn need(program: &str) -> PathBuf {
    for dir in ["/usr/sbin", "/usr/bin", "/sbin", "/bin"] {
        let p = Path::new(dir).join(program);
        if p.exists() {
            return p;
        }
    }
    panic!("{program} is missing: the Slurm tests run a real Slurm cluster; {INSTALL}");
}

fn short_hostname() -> String {
    let out = Command::new("hostname")
        .arg("-s")
        .output()
        .expect("hostname runs");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

impl Cluster {
    /// A one-node cluster: see [`Cluster::start_nodes`].
    pub fn start() -> Cluster {
        Cluster::start_nodes(1)
    }

    /// Starts munged, slurmctld and `nodes` slurmd and waits for every node
    /// to be idle. Fails (never skips) when Slurm or munge is missing.
    pub fn start_nodes(nodes: usize) -> Cluster {
        for p in ["salloc", "srun", "sbcast", "squeue", "scancel", "sinfo"] {
            need(p);
        }
        let (munged, slurmctld, slurmd) = (need("munged"), need("slurmctld"), need("slurmd"));
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        for sub in ["munge", "state", "spool", "log"] {
            std::fs::create_dir_all(d.join(sub)).unwrap();
        }
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(d.join("munge"), std::fs::Permissions::from_mode(0o700)).unwrap();
        let key = d.join("munge/munge.key");
        std::fs::write(
            &key,
            (0..1024)
                .map(|i| (i * 7919 % 251) as u8)
                .collect::<Vec<_>>(),
        )
        .unwrap();
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o400)).unwrap();
        let socket = d.join("munge/munge.sock");
        let conf = d.join("slurm.conf");
        let host = short_hostname();
        let names: Vec<String> = (0..nodes).map(node_name).collect();
        std::fs::write(
            &conf,
            format!(
                "ClusterName=herdtest\n\
                 SlurmctldHost={host}(127.0.0.1)\n\
                 SlurmctldPort={ctld}\n\
                 SlurmdPort={slurmd}\n\
                 AuthType=auth/munge\n\
                 AuthInfo=socket={socket}\n\
                 CredType=cred/munge\n\
                 ProctrackType=proctrack/linuxproc\n\
                 TaskPlugin=task/none\n\
                 SelectType=select/cons_tres\n\
                 SelectTypeParameters=CR_CPU\n\
                 SlurmUser=root\n\
                 SlurmdUser=root\n\
                 ReturnToService=2\n\
                 MpiDefault=none\n\
                 JobAcctGatherType=jobacct_gather/none\n\
                 AccountingStorageType=accounting_storage/none\n\
                 SlurmdParameters=config_overrides\n\
                 KillWait=2\n\
                 StateSaveLocation={d}/state\n\
                 SlurmdSpoolDir={d}/spool/%n\n\
                 SlurmctldPidFile={d}/slurmctld.pid\n\
                 SlurmdPidFile={d}/slurmd-%n.pid\n\
                 SlurmctldLogFile={d}/log/slurmctld.log\n\
                 SlurmdLogFile={d}/log/slurmd-%n.log\n\
                 {node_lines}\
                 PartitionName=batch Nodes={names} Default=YES MaxTime=INFINITE State=UP OverSubscribe=YES\n",
                node_lines = names
                    .iter()
                    .map(|n| format!(
                        "NodeName={n} NodeHostname={host} NodeAddr=127.0.0.1 Port={} CPUs={CPUS} State=UNKNOWN\n",
                        free_port()
                    ))
                    .collect::<String>(),
                names = names.join(","),
                ctld = free_port(),
                slurmd = free_port(),
                socket = socket.display(),
                d = d.display(),
            ),
        )
        .unwrap();
        let mut c = Cluster {
            dir,
            conf,
            names,
            children: Vec::new(),
        };
        let log = |name: &str| std::fs::File::create(c.dir.path().join("log").join(name)).unwrap();
        let (m_out, ctld_out) = (log("munged.out"), log("slurmctld.out"));
        let m = Command::new(munged)
            .args(["-F", "--force"])
            .arg(format!("--socket={}", socket.display()))
            .arg(format!("--key-file={}", key.display()))
            .arg(format!(
                "--pid-file={}",
                c.dir.path().join("munge/pid").display()
            ))
            .arg(format!(
                "--seed-file={}",
                c.dir.path().join("munge/seed").display()
            ))
            .arg(format!(
                "--log-file={}",
                c.dir.path().join("log/munged.log").display()
            ))
            .stdout(Stdio::null())
            .stderr(m_out)
            .spawn()
            .unwrap_or_else(|e| panic!("munged: {e}; {INSTALL}"));
        c.children.push(("munged".into(), m));
        let until = Instant::now() + Duration::from_secs(10);
        while !socket.exists() {
            assert!(
                Instant::now() < until,
                "munged made no socket: {}",
                c.logs()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        let ctld = Command::new(slurmctld)
            .arg("-D")
            .arg("-f")
            .arg(&c.conf)
            .stdout(Stdio::null())
            .stderr(ctld_out)
            .spawn()
            .unwrap();
        c.children.push(("slurmctld".into(), ctld));
        std::fs::create_dir_all(c.node_cache()).unwrap();
        for i in 0..nodes {
            let sd = c.slurmd(&slurmd, i);
            c.children.push((format!("slurmd {}", c.names[i]), sd));
        }
        let until = Instant::now() + IDLE_WITHIN;
        loop {
            let state = c.client("sinfo", &["-h", "-N", "-o", "%T"]);
            if state.lines().filter(|l| l.trim() == "idle").count() == nodes {
                break;
            }
            assert!(
                Instant::now() < until,
                "the nodes are not idle within {IDLE_WITHIN:?} (sinfo says {state:?}): {}",
                c.logs()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        c
    }

    /// Starts node `i`'s slurmd. With more than one node, in a mount
    /// namespace of its own where the node cache is node `i`'s folder
    /// ([`Cluster::node_local`]), so that, as on separate machines, a file
    /// one node writes there the others do not see.
    fn slurmd(&self, slurmd: &Path, i: usize) -> Child {
        let out = std::fs::File::create(
            self.dir
                .path()
                .join("log")
                .join(format!("slurmd-{}.out", self.names[i])),
        )
        .unwrap();
        let mut cmd = if self.names.len() == 1 {
            Command::new(slurmd)
        } else {
            let own = self.node_local(i);
            std::fs::create_dir_all(&own).unwrap();
            let mut cmd = Command::new(need("unshare"));
            cmd.args(["--mount", "--propagation", "private", "/bin/sh", "-c"])
                .arg("mount --bind \"$1\" \"$2\" && shift 2 && exec \"$@\"")
                .arg("slurmd-node")
                .arg(own)
                .arg(self.node_cache())
                .arg(slurmd);
            cmd
        };
        cmd.args(["-D", "-N", &self.names[i], "-f"])
            .arg(&self.conf)
            .stdout(Stdio::null())
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("slurmd: {e}; {INSTALL}"))
    }

    /// The node names, `herdnode` first.
    pub fn nodes(&self) -> &[String] {
        &self.names
    }

    /// Where node `i`'s node cache folder lies as this process sees it
    /// (with one node, the node cache itself).
    pub fn node_local(&self, i: usize) -> PathBuf {
        if self.names.len() == 1 {
            self.node_cache()
        } else {
            self.dir.path().join("nodes").join(&self.names[i])
        }
    }

    /// The node-local cache folder the hosts of [`Cluster::host_toml`] use.
    pub fn node_cache(&self) -> PathBuf {
        self.dir.path().join("node")
    }

    /// hosts.toml lines of a slurm host `name` of `slots` on this cluster's
    /// partition, its node cache in the cluster's folder, with `extra` keys.
    pub fn host_toml(&self, name: &str, slots: u32, extra: &str) -> String {
        format!(
            "[[host]]\nname = \"{name}\"\nkind = \"slurm\"\nslots = {slots}\npartition = \"batch\"\n\
             time = \"10\"\nstart_timeout = \"30s\"\nnode_cache = \"{}\"\ndevice = \"cpu\"\n\
             cost_per_hour = 1.0\n{extra}\n\n",
            self.node_cache().display()
        )
    }

    /// A command with `SLURM_CONF` naming this cluster.
    pub fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(program);
        cmd.env("SLURM_CONF", &self.conf);
        cmd
    }

    /// Runs a client command; its stdout.
    pub fn client(&self, program: &str, args: &[&str]) -> String {
        let out = self.command(program).args(args).output().unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Cancels job or step `id` (`scancel`), which must succeed.
    pub fn scancel(&self, id: &str) {
        let out = self.command("scancel").arg(id).output().unwrap();
        assert!(out.status.success(), "scancel {id}: {out:?}");
    }

    /// Job ids in the queue (any state).
    pub fn jobs(&self) -> Vec<String> {
        self.client("squeue", &["-h", "-o", "%i"])
            .lines()
            .map(|l| l.trim().to_string())
            .filter(|l| !l.is_empty())
            .collect()
    }

    /// `JOB.STEP` ids of the running worker steps (numbered ones only), with
    /// the node each runs on.
    pub fn steps_on(&self) -> Vec<(String, String)> {
        self.client("squeue", &["-h", "-s", "-o", "%i|%N"])
            .lines()
            .filter_map(|l| l.trim().split_once('|'))
            .filter(|(id, _)| {
                id.split_once('.')
                    .is_some_and(|(_, s)| s.bytes().all(|b| b.is_ascii_digit()))
            })
            .map(|(id, node)| (id.to_string(), node.to_string()))
            .collect()
    }

    /// `JOB.STEP` ids of the running worker steps (numbered ones only).
    pub fn steps(&self) -> Vec<String> {
        self.steps_on().into_iter().map(|(id, _)| id).collect()
    }

    /// Waits for the queue to be empty; the jobs still in it otherwise.
    pub fn jobs_gone_within(&self, limit: Duration) -> Vec<String> {
        let until = Instant::now() + limit;
        loop {
            let jobs = self.jobs();
            if jobs.is_empty() || Instant::now() >= until {
                return jobs;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The daemons' logs, for failure messages.
    pub fn logs(&self) -> String {
        let mut files = vec!["munged.out".to_string(), "slurmctld.log".into()];
        for n in &self.names {
            files.push(format!("slurmd-{n}.log"));
        }
        files.push("slurmctld.out".into());
        for n in &self.names {
            files.push(format!("slurmd-{n}.out"));
        }
        let mut out = String::new();
        for f in files {
            let text =
                std::fs::read_to_string(self.dir.path().join("log").join(&f)).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(15).collect();
            out.push_str(&format!("\n--- {f}\n"));
            for l in tail.into_iter().rev() {
                out.push_str(l);
                out.push('\n');
            }
        }
        out
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let jobs = self.jobs();
        if !jobs.is_empty() {
            let _ = self.command("scancel").args(&jobs).status();
            self.jobs_gone_within(Duration::from_secs(10));
        }
        for (_, child) in self.children.iter_mut().rev() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
