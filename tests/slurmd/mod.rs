//! A real one-node Slurm cluster for the Slurm tests: its own munged,
//! slurmctld and slurmd (Debian's slurm-wlm and munge), every file in a
//! temporary folder, the daemons on loopback ports of their own. The node
//! is `herdnode` (on this machine, 8 CPUs declared). Every job is cancelled
//! and every daemon killed on drop.
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
    children: Vec<(String, Child)>,
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
    /// Starts munged, slurmctld and slurmd and waits for the node to be
    /// idle. Fails (never skips) when Slurm or munge is missing.
    pub fn start() -> Cluster {
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
                 SlurmdSpoolDir={d}/spool\n\
                 SlurmctldPidFile={d}/slurmctld.pid\n\
                 SlurmdPidFile={d}/slurmd.pid\n\
                 SlurmctldLogFile={d}/log/slurmctld.log\n\
                 SlurmdLogFile={d}/log/slurmd.log\n\
                 NodeName={NODE} NodeHostname={host} NodeAddr=127.0.0.1 CPUs={CPUS} State=UNKNOWN\n\
                 PartitionName=batch Nodes={NODE} Default=YES MaxTime=INFINITE State=UP OverSubscribe=YES\n",
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
            children: Vec::new(),
        };
        let log = |name: &str| std::fs::File::create(c.dir.path().join("log").join(name)).unwrap();
        let (m_out, ctld_out, d_out) = (log("munged.out"), log("slurmctld.out"), log("slurmd.out"));
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
        let sd = Command::new(slurmd)
            .args(["-D", "-N", NODE, "-f"])
            .arg(&c.conf)
            .stdout(Stdio::null())
            .stderr(d_out)
            .spawn()
            .unwrap();
        c.children.push(("slurmd".into(), sd));
        let until = Instant::now() + IDLE_WITHIN;
        loop {
            let state = c.client("sinfo", &["-h", "-o", "%T"]);
            if state.trim() == "idle" {
                break;
            }
            assert!(
                Instant::now() < until,
                "the node is not idle within {IDLE_WITHIN:?} (sinfo says {state:?}): {}",
                c.logs()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        c
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

    /// Job ids in the queue (any state).
    pub fn jobs(&self) -> Vec<String> {
        self.client("squeue", &["-h", "-o", "%i"])
            .lines()
            .map(|l| l.trim().to_string())
            .filter(|l| !l.is_empty())
            .collect()
    }

    /// `JOB.STEP` ids of the running worker steps (numbered ones only).
    pub fn steps(&self) -> Vec<String> {
        self.client("squeue", &["-h", "-s", "-o", "%i"])
            .lines()
            .map(|l| l.trim().to_string())
            .filter(|l| {
                l.split_once('.')
                    .is_some_and(|(_, s)| s.bytes().all(|b| b.is_ascii_digit()))
            })
            .collect()
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
        let mut out = String::new();
        for f in [
            "munged.out",
            "slurmctld.log",
            "slurmd.log",
            "slurmctld.out",
            "slurmd.out",
        ] {
            let text =
                std::fs::read_to_string(self.dir.path().join("log").join(f)).unwrap_or_default();
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
