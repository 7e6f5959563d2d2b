//! Real OpenSSH servers for the SSH tests: each `/usr/sbin/sshd -D -e` a
//! child process on its own loopback address (127.0.0.2, .3, ...) and a free
//! port, with its own host key, one generated ed25519 user key in
//! `authorized_keys`, key-only auth, and a `known_hosts` file naming them all.
//! Killed (with every process under it) on drop.
//!
//! Every remote command runs as root here (the test machine is root), so the
//! servers cannot be told apart by user. Instead each sshd sets
//! `HOME=<scratch>/homeN` for its sessions (`SetEnv`): each host gets its own
//! cache folder (`$HOME/.cache/herd`), tests never share caches, and a worker
//! process belongs to host N exactly when its executable lies under homeN.
//! `SetEnv SHLVL=1` with that empty HOME also keeps root's shell start-up
//! files out of every exec.
#![allow(dead_code)]

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const SSHD: &str = "/usr/sbin/sshd";

/// How long a server may take to accept connections.
const READY_WITHIN: Duration = Duration::from_secs(10);

pub struct Server {
    pub name: String,
    pub ip: String,
    pub port: u16,
    /// $HOME of this server's sessions.
    pub home: PathBuf,
    pub host_key_pub: PathBuf,
    config: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

pub struct Servers {
    pub dir: tempfile::TempDir,
    pub servers: Vec<Server>,
    /// The user key every server accepts.
    pub user_key: PathBuf,
    /// An RSA user key every server accepts too.
    pub user_rsa_key: PathBuf,
    /// A key no server accepts.
    pub stranger_key: PathBuf,
    /// Lists every server's host key.
    pub known_hosts: PathBuf,
}

fn keygen(path: &Path) {
    keygen_type(path, &["-t", "ed25519"]);
}

fn keygen_type(path: &Path, kind: &[&str]) {
    let out = Command::new("ssh-keygen")
        .arg("-q")
        .args(kind)
        .args(["-N", "", "-C", "herd-test", "-f"])
        .arg(path)
        .output()
        .expect("ssh-keygen runs (apt-get install -y openssh-client)");
    assert!(out.status.success(), "ssh-keygen: {out:?}");
}

fn free_port(ip: &str) -> u16 {
    TcpListener::bind((ip, 0))
        .unwrap_or_else(|e| panic!("bind {ip}:0: {e}"))
        .local_addr()
        .unwrap()
        .port()
}

impl Servers {
    /// Starts `n` servers. Fails (never skips) when sshd is missing.
    pub fn start(n: usize) -> Servers {
        assert!(
            Path::new(SSHD).exists(),
            "{SSHD} is missing: the SSH tests need real OpenSSH servers; run `apt-get install -y openssh-server`"
        );
        std::fs::create_dir_all("/run/sshd")
            .expect("mkdir /run/sshd (sshd's privilege separation folder)");
        let dir = tempfile::tempdir().expect("temp dir");
        let user_key = dir.path().join("user_key");
        let stranger_key = dir.path().join("stranger_key");
        let user_rsa_key = dir.path().join("user_rsa_key");
        keygen(&user_key);
        keygen(&stranger_key);
        keygen_type(&user_rsa_key, &["-t", "rsa", "-b", "2048"]);
        let authorized = dir.path().join("authorized_keys");
        let mut keys = std::fs::read_to_string(dir.path().join("user_key.pub")).unwrap();
        keys.push_str(&std::fs::read_to_string(dir.path().join("user_rsa_key.pub")).unwrap());
        std::fs::write(&authorized, keys).unwrap();
        let mut servers = Vec::new();
        let mut known = String::new();
        for i in 0..n {
            let ip = format!("127.0.0.{}", i + 2);
            let port = free_port(&ip);
            let host_key = dir.path().join(format!("host{i}_key"));
            keygen(&host_key);
            let home = dir.path().join(format!("home{i}"));
            std::fs::create_dir_all(&home).unwrap();
            let config = dir.path().join(format!("sshd{i}.conf"));
            std::fs::write(
                &config,
                format!(
                    "ListenAddress {ip}:{port}\n\
                     HostKey {hk}\n\
                     AuthorizedKeysFile {ak}\n\
                     PubkeyAuthentication yes\n\
                     PasswordAuthentication no\n\
                     KbdInteractiveAuthentication no\n\
                     PermitRootLogin prohibit-password\n\
                     UsePAM no\n\
                     StrictModes no\n\
                     PidFile none\n\
                     MaxSessions 64\n\
                     SetEnv HOME={home} SHLVL=1\n",
                    hk = host_key.display(),
                    ak = authorized.display(),
                    home = home.display(),
                ),
            )
            .unwrap();
            let pubkey =
                std::fs::read_to_string(dir.path().join(format!("host{i}_key.pub"))).unwrap();
            let mut words = pubkey.split_whitespace();
            known.push_str(&format!(
                "[{ip}]:{port} {} {}\n",
                words.next().unwrap(),
                words.next().unwrap()
            ));
            let mut s = Server {
                name: format!("ssh{i}"),
                ip,
                port,
                home,
                host_key_pub: dir.path().join(format!("host{i}_key.pub")),
                config,
                log: dir.path().join(format!("sshd{i}.log")),
                child: None,
            };
            s.launch();
            servers.push(s);
        }
        let known_hosts = dir.path().join("known_hosts");
        std::fs::write(&known_hosts, known).unwrap();
        for s in &servers {
            s.wait_ready();
        }
        Servers {
            dir,
            servers,
            user_key,
            user_rsa_key,
            stranger_key,
            known_hosts,
        }
    }
}

impl Servers {
    /// hosts.toml lines of one ssh host per server (named as the server),
    /// each of `slots`.
    pub fn hosts_toml(&self, slots: u32) -> String {
        let mut t = String::new();
        for s in &self.servers {
            t.push_str(&format!(
                "[[host]]\nname = \"{}\"\nkind = \"ssh\"\naddress = \"{}\"\nuser = \"root\"\n\
                 identity = \"{}\"\nknown_hosts = \"{}\"\nslots = {slots}\ndevice = \"cpu\"\n\
                 threads = 1\ncost_per_hour = 1.0\n\n",
                s.name,
                s.address(),
                self.user_key.display(),
                self.known_hosts.display(),
            ));
        }
        t
    }
}

impl Server {
    fn launch(&mut self) {
        let log = std::fs::File::create(&self.log).unwrap();
        let child = Command::new(SSHD)
            .args(["-D", "-e", "-f"])
            .arg(&self.config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("start {SSHD}: {e}"));
        self.child = Some(child);
    }

    fn wait_ready(&self) {
        let addr: SocketAddr = format!("{}:{}", self.ip, self.port).parse().unwrap();
        let until = Instant::now() + READY_WITHIN;
        while Instant::now() < until {
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("sshd on {addr} did not start: {}", self.log_text());
    }

    pub fn address(&self) -> String {
        format!("{}:{}", self.ip, self.port)
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `SHA256:...` of this server's host key, as ssh-keygen prints it.
    pub fn fingerprint(&self) -> String {
        let out = Command::new("ssh-keygen")
            .arg("-lf")
            .arg(&self.host_key_pub)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .nth(1)
            .unwrap()
            .to_string()
    }

    /// The remote cache folder herd uses on this server.
    pub fn cache(&self) -> PathBuf {
        self.home.join(".cache").join("herd")
    }

    /// Pids of `herd worker` processes of this server (executable under its
    /// HOME), whoever their parent is now.
    pub fn workers(&self) -> Vec<u32> {
        let mut pids = Vec::new();
        for entry in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let Ok(exe) = std::fs::read_link(entry.path().join("exe")) else {
                continue;
            };
            let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
            let is_worker = cmdline.split(|b| *b == 0).any(|a| a == b"worker");
            if exe.starts_with(&self.home) && is_worker {
                pids.push(pid);
            }
        }
        pids
    }

    /// Waits up to `within` for this server's workers to be gone; returns
    /// those left.
    pub fn workers_gone_within(&self, within: Duration) -> Vec<u32> {
        let until = Instant::now() + within;
        loop {
            let left = self.workers();
            if left.is_empty() || Instant::now() >= until {
                return left;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Kills sshd and every process under it (listener, sessions, workers):
    /// the host is gone as if it lost power.
    pub fn kill_all(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let mut pids = descendants(child.id());
        pids.push(child.id());
        for pid in &pids {
            unsafe {
                libc::kill(*pid as i32, libc::SIGKILL);
            }
        }
        for pid in self.workers() {
            unsafe {
                libc::kill(pid as i32, libc::SIGKILL);
            }
        }
        let _ = child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill_all();
    }
}

/// Every process whose parent chain leads to `root`.
pub fn descendants(root: u32) -> Vec<u32> {
    let mut parent_of = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // "pid (comm) state ppid ...": comm may hold spaces, so split after ')'.
        let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
            continue;
        };
        if let Some(ppid) = rest
            .split_whitespace()
            .nth(1)
            .and_then(|p| p.parse::<u32>().ok())
        {
            parent_of.push((pid, ppid));
        }
    }
    let mut found = vec![root];
    let mut i = 0;
    while i < found.len() {
        let p = found[i];
        for (pid, ppid) in &parent_of {
            if *ppid == p && !found.contains(pid) {
                found.push(*pid);
            }
        }
        i += 1;
    }
    found.remove(0);
    found
}
