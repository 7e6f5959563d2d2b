//! Shared by the `herd serve` tests: a server started as the real binary on
//! ephemeral loopback ports, a raw RESP client, a raw HTTP/1.1 client, and
//! checks that the outside tools the tests drive are installed.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub const HERD: &str = env!("CARGO_BIN_EXE_herd");

/// Unix seconds now.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A running `herd serve`, killed when dropped.
pub struct Server {
    pub child: Child,
    pub resp: SocketAddr,
    pub http: SocketAddr,
}

impl Server {
    /// Starts `herd serve --store DIR` on ephemeral loopback ports, with the
    /// password in the environment when given.
    pub fn start(store: &Path, password: Option<&str>, extra: &[&str]) -> Server {
        let mut cmd = Command::new(HERD);
        cmd.args(["serve", "--store"])
            .arg(store)
            .args(["--resp", "127.0.0.1:0", "--http", "127.0.0.1:0"])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .env_remove("HERD_SERVE_PASSWORD");
        if let Some(p) = password {
            cmd.env("HERD_SERVE_PASSWORD", p);
        }
        Server::spawn(cmd)
    }

    /// Runs `cmd`, which runs `herd serve` (perhaps through a wrapper) and
    /// passes its standard output on, and reads the bound addresses.
    pub fn spawn(mut cmd: Command) -> Server {
        let mut child = cmd
            .stdout(Stdio::piped())
            .spawn()
            .expect("start herd serve");
        let stdout = child.stdout.take().expect("piped");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read herd serve's first line");
        let field = |name: &str| -> SocketAddr {
            let mut words = line.split_whitespace();
            words.find(|w| *w == name);
            words
                .next()
                .and_then(|a| a.parse().ok())
                .unwrap_or_else(|| panic!("no '{name} ADDR' in herd serve's line: {line:?}"))
        };
        let (resp, http) = (field("resp"), field("http"));
        Server { child, resp, http }
    }

    /// The server's resident memory, from /proc.
    pub fn rss_bytes(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .expect("read /proc status");
        let kb: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .expect("VmRSS");
        kb * 1024
    }

    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A RESP reply as a test reads it.
#[derive(Clone, Debug, PartialEq)]
pub enum Resp {
    Simple(String),
    Error(String),
    Int(i64),
    Bulk(Vec<u8>),
    Nil,
    Array(Vec<Resp>),
    Map(Vec<(Resp, Resp)>),
}

impl Resp {
    pub fn text(&self) -> String {
        match self {
            Resp::Bulk(b) => String::from_utf8_lossy(b).into_owned(),
            Resp::Simple(s) | Resp::Error(s) => s.clone(),
            other => panic!("not text: {other:?}"),
        }
    }
}

/// A blocking RESP client speaking to one connection.
pub struct RespClient {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl RespClient {
    pub fn connect(addr: SocketAddr) -> RespClient {
        let s = TcpStream::connect(addr).expect("connect to RESP");
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        s.set_nodelay(true).unwrap();
        RespClient {
            reader: BufReader::new(s.try_clone().unwrap()),
            writer: s,
        }
    }

    pub fn send(&mut self, args: &[&[u8]]) {
        let mut out = format!("*{}\r\n", args.len()).into_bytes();
        for a in args {
            out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
            out.extend_from_slice(a);
            out.extend_from_slice(b"\r\n");
        }
        self.writer.write_all(&out).expect("send a command");
    }

    pub fn call(&mut self, args: &[&str]) -> Resp {
        let bytes: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
        self.send(&bytes);
        self.read()
    }

    pub fn read(&mut self) -> Resp {
        self.try_read().expect("read a reply")
    }

    pub fn try_read(&mut self) -> std::io::Result<Resp> {
        let mut line = String::new();
        if self.reader.read_line(&mut line)? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        let line = line.trim_end_matches("\r\n");
        let (kind, rest) = line.split_at(1);
        let n = || rest.parse::<i64>().expect("a length");
        Ok(match kind {
            "+" => Resp::Simple(rest.into()),
            "-" => Resp::Error(rest.into()),
            ":" => Resp::Int(n()),
            "_" => Resp::Nil,
            "$" if n() < 0 => Resp::Nil,
            "$" => {
                let mut b = vec![0u8; n() as usize + 2];
                self.reader.read_exact(&mut b)?;
                b.truncate(b.len() - 2);
                Resp::Bulk(b)
            }
            "*" if n() < 0 => Resp::Nil,
            "*" => Resp::Array((0..n()).map(|_| self.read()).collect()),
            "%" => Resp::Map((0..n()).map(|_| (self.read(), self.read())).collect()),
            other => panic!("unexpected reply type {other:?} in {line:?}"),
        })
    }

    pub fn stream(&mut self) -> &mut TcpStream {
        &mut self.writer
    }
}

/// One HTTP response.
#[derive(Debug)]
pub struct HttpReply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpReply {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A blocking HTTP/1.1 client on one keep-alive connection.
pub struct HttpClient {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
    auth: Option<String>,
}

impl HttpClient {
    pub fn connect(addr: SocketAddr) -> HttpClient {
        let s = TcpStream::connect(addr).expect("connect to HTTP");
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        HttpClient {
            reader: BufReader::new(s.try_clone().unwrap()),
            writer: s,
            auth: None,
        }
    }

    pub fn with_bearer(mut self, token: &str) -> HttpClient {
        self.auth = Some(token.to_string());
        self
    }

    pub fn request(&mut self, method: &str, path: &str, body: Option<&str>) -> HttpReply {
        let mut req = format!("{method} {path} HTTP/1.1\r\nhost: test\r\n");
        if let Some(t) = &self.auth {
            req.push_str(&format!("authorization: Bearer {t}\r\n"));
        }
        if let Some(b) = body {
            req.push_str(&format!(
                "content-type: application/json\r\ncontent-length: {}\r\n\r\n{b}",
                b.len()
            ));
        } else {
            req.push_str("\r\n");
        }
        self.writer.write_all(req.as_bytes()).expect("send request");
        self.read_reply()
    }

    pub fn get(&mut self, path: &str) -> HttpReply {
        self.request("GET", path, None)
    }

    pub fn read_reply(&mut self) -> HttpReply {
        let mut line = String::new();
        self.reader.read_line(&mut line).expect("status line");
        let status: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("bad status line {line:?}"));
        let mut headers = Vec::new();
        loop {
            let mut h = String::new();
            self.reader.read_line(&mut h).expect("header");
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            let (k, v) = h.split_once(':').expect("header has a colon");
            headers.push((k.trim().to_string(), v.trim().to_string()));
        }
        let chunked = headers.iter().any(|(k, v)| {
            k.eq_ignore_ascii_case("transfer-encoding") && v.eq_ignore_ascii_case("chunked")
        });
        let body = if chunked {
            self.read_chunked()
        } else {
            let len: usize = headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
                .map(|(_, v)| v.parse().unwrap())
                .unwrap_or(0);
            let mut body = vec![0u8; len];
            self.reader.read_exact(&mut body).expect("body");
            body
        };
        HttpReply {
            status,
            headers,
            body,
        }
    }
}

impl HttpClient {
    /// A `transfer-encoding: chunked` body.
    fn read_chunked(&mut self) -> Vec<u8> {
        let mut body = Vec::new();
        loop {
            let mut size = String::new();
            self.reader.read_line(&mut size).expect("chunk size");
            let size = usize::from_str_radix(size.trim_end(), 16)
                .unwrap_or_else(|_| panic!("bad chunk size {size:?}"));
            let start = body.len();
            body.resize(start + size + 2, 0);
            self.reader.read_exact(&mut body[start..]).expect("chunk");
            assert_eq!(&body[start + size..], b"\r\n", "chunk not followed by CRLF");
            body.truncate(start + size);
            if size == 0 {
                return body;
            }
        }
    }
}

/// Fails the test with the install hint when a tool is missing.
pub fn require_tool(tool: &str, hint: &str) {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(found, "{tool} is not installed: {hint}");
}

pub fn require_redis_tools() {
    require_tool(
        "redis-cli",
        "apt-get install -y redis-server redis-tools (.ci/run installs them)",
    );
    require_tool(
        "redis-server",
        "apt-get install -y redis-server redis-tools (.ci/run installs them)",
    );
}

pub fn require_redis_py() {
    let ok = Command::new("python3")
        .args(["-c", "import redis"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(
        ok,
        "python3 cannot import redis: pip install redis (.ci/run installs it)"
    );
}

/// `herd store get ID --json` of `store`, as text.
pub fn store_get_json(store: &Path, id: &str, version: Option<u64>) -> String {
    let mut cmd = Command::new(HERD);
    cmd.args(["store", "get", id, "--json", "--store"])
        .arg(store);
    if let Some(v) = version {
        cmd.args(["--version", &v.to_string()]);
    }
    let out = cmd.output().expect("run herd store get");
    assert!(
        out.status.success(),
        "herd store get {id}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .trim_end()
        .to_string()
}

/// Commits `preds` of `ids` as the whole of version `v` (timestamp `now`),
/// marks it validated and flips it live, as a run would.
#[allow(dead_code)] // not every test file that includes this module uses it
pub fn publish(
    store: &herd::store::Store,
    v: u64,
    ids: &herd::model::EntityIds,
    preds: &herd::model::Predictions,
    now: u64,
) {
    commit_validated(store, v, ids, preds, now);
    store.flip(v).unwrap();
}

/// Flips the store at `store` to version `v` in another process:
/// `herd store flip`.
pub fn flip_by_cli(store: &Path, v: u64) {
    let out = Command::new(HERD)
        .args(["store", "flip", "--to", &v.to_string(), "--store"])
        .arg(store)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
}

/// Commits `preds` of `ids` as the whole of version `v` (timestamp `now`)
/// and marks it validated, as a run does before its flip.
pub fn commit_validated(
    store: &herd::store::Store,
    v: u64,
    ids: &herd::model::EntityIds,
    preds: &herd::model::Predictions,
    now: u64,
) {
    let rows = ids.len() as u64;
    assert!(store.commit_chunk(v, 0..rows, ids, preds, now).unwrap());
    store
        .update_record(v, |r| r.status = herd::store::Status::Validated)
        .unwrap();
}
