//! Slow and malicious clients against `herd serve`: a 1 GB request line, a
//! never-ending bulk string or body, 10,000 idle connections, a request that
//! never finishes, a full server. Each must leave memory bounded and other
//! clients served.

mod serve_common;
mod store_common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use herd::store::Store;
use serve_common::*;
use store_common::build_scores_version;

const GIB: u64 = 1 << 30;
/// Server memory growth allowed while one attack runs.
const MAX_GROWTH: u64 = 64 << 20;

fn small_store(dir: &Path) -> PathBuf {
    let path = dir.join("store");
    let store = Store::open(&path).unwrap();
    let v = build_scores_version(&store, "hostile", 100, 100, 4, 1.0);
    store.flip(v).unwrap();
    path
}

/// A well-behaved client is answered, promptly, over both protocols.
fn others_are_served(server: &Server) {
    let started = Instant::now();
    let mut c = RespClient::connect(server.resp);
    assert!(matches!(c.call(&["GET", "7"]), Resp::Bulk(_)));
    let mut h = HttpClient::connect(server.http);
    assert_eq!(h.get("/v1/predictions/7").status, 200);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "a normal client waited {:?}",
        started.elapsed()
    );
}

/// Writes `chunk` repeatedly until the server stops taking bytes or `limit`
/// bytes went out; returns the bytes written. A well-behaved client is
/// served while the flood goes on.
fn flood(stream: &mut TcpStream, chunk: &[u8], limit: u64, server: &Server) -> u64 {
    stream
        .set_write_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut sent = 0u64;
    let mut checked = false;
    while sent < limit {
        match stream.write(chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => sent += n as u64,
        }
        if !checked && sent > 4 << 20 {
            others_are_served(server);
            checked = true;
        }
    }
    sent
}

/// Reads what the server said before closing (up to 64 KiB).
fn last_words(stream: &mut TcpStream) -> String {
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut buf = vec![0u8; 64 << 10];
    let mut got = 0;
    while got < buf.len() {
        match stream.read(&mut buf[got..]) {
            Ok(0) | Err(_) => break,
            Ok(n) => got += n,
        }
    }
    String::from_utf8_lossy(&buf[..got]).into_owned()
}

#[test]
fn a_1_gb_inline_request_line_is_cut_off_at_64_kib() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&small_store(dir.path()), None, &[]);
    let before = server.rss_bytes();
    let mut s = TcpStream::connect(server.resp).unwrap();
    let sent = flood(&mut s, &vec![b'a'; 1 << 20], GIB, &server);
    assert!(sent < GIB, "the server took the whole 1 GB line");
    let words = last_words(&mut s);
    assert!(
        words.is_empty() || words.contains("too big inline request"),
        "{words:?}"
    );
    assert!(
        server.rss_bytes() < before + MAX_GROWTH,
        "memory grew from {before} to {}",
        server.rss_bytes()
    );
    others_are_served(&server);
}

#[test]
fn a_never_ending_bulk_string_is_refused_from_its_header() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&small_store(dir.path()), None, &[]);
    let before = server.rss_bytes();
    // Declares 1 GB, then sends it.
    let mut s = TcpStream::connect(server.resp).unwrap();
    s.write_all(b"*2\r\n$3\r\nGET\r\n$1073741824\r\n").unwrap();
    let sent = flood(&mut s, &vec![b'x'; 1 << 20], GIB, &server);
    assert!(sent < GIB);
    let words = last_words(&mut s);
    assert!(
        words.is_empty() || words.contains("invalid bulk length"),
        "{words:?}"
    );
    // A bulk string that never reaches its CRLF.
    let mut s = TcpStream::connect(server.resp).unwrap();
    s.write_all(b"*1\r\n$4\r\nPING").unwrap();
    let sent = flood(&mut s, &vec![b'y'; 1 << 20], GIB, &server);
    assert!(sent < GIB);
    // Many arguments, each within limits, adding up past the command limit.
    let mut s = TcpStream::connect(server.resp).unwrap();
    s.write_all(b"*10001\r\n$4\r\nMGET\r\n").unwrap();
    let arg = format!("$65536\r\n{}\r\n", "k".repeat(65536));
    let sent = flood(&mut s, arg.as_bytes(), GIB, &server);
    assert!(sent < GIB);
    assert!(server.rss_bytes() < before + MAX_GROWTH);
    others_are_served(&server);
}

#[test]
fn a_1_gb_http_request_line_and_an_endless_body_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&small_store(dir.path()), None, &[]);
    let before = server.rss_bytes();
    let mut s = TcpStream::connect(server.http).unwrap();
    s.write_all(b"GET /v1/predictions/").unwrap();
    let sent = flood(&mut s, &vec![b'a'; 1 << 20], GIB, &server);
    assert!(sent < GIB, "the server took the whole 1 GB request line");
    let words = last_words(&mut s);
    assert!(
        words.is_empty() || words.starts_with("HTTP/1.1 431"),
        "{words:?}"
    );

    // A chunked body that never ends.
    let mut s = TcpStream::connect(server.http).unwrap();
    s.write_all(
        b"POST /v1/predictions:batchGet HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n",
    )
    .unwrap();
    let chunk = format!("10000\r\n{}\r\n", "[".repeat(0x10000));
    let sent = flood(&mut s, chunk.as_bytes(), GIB, &server);
    assert!(sent < GIB, "the server took a 1 GB body");
    let words = last_words(&mut s);
    assert!(
        words.is_empty() || words.starts_with("HTTP/1.1 413"),
        "{words:?}"
    );
    assert!(server.rss_bytes() < before + MAX_GROWTH);
    others_are_served(&server);
}

/// Raises this process's open-file limit to its hard limit.
fn raise_file_limit() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: valid pointers to rlimit structs.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim), 0);
        lim.rlim_cur = lim.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
    }
    lim.rlim_cur
}

fn open_idle(addr: SocketAddr, n: usize) -> Vec<TcpStream> {
    (0..n)
        .map(|i| TcpStream::connect(addr).unwrap_or_else(|e| panic!("idle connection {i}: {e}")))
        .collect()
}

#[test]
fn ten_thousand_idle_connections_neither_exhaust_memory_nor_block_others() {
    let files = raise_file_limit();
    assert!(
        files >= 11_000,
        "this test needs an open-file limit of at least 11000 (ulimit -Hn is {files})"
    );
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&small_store(dir.path()), None, &[]);
    let before = server.rss_bytes();
    // RESP connections: an idle HTTP connection is closed after the
    // request-head timeout (10 s), a RESP one only after --idle-timeout.
    let idle = open_idle(server.resp, 10_000);
    // Let the server accept them all.
    let started = Instant::now();
    loop {
        let mut h = HttpClient::connect(server.http);
        let text = String::from_utf8(h.get("/metrics").body).unwrap();
        let open: u64 = text
            .lines()
            .find_map(|l| l.strip_prefix("herd_connections{protocol=\"resp\"} "))
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        if open >= 10_000 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "only {open} connections accepted"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    others_are_served(&server);
    let grown = server.rss_bytes().saturating_sub(before);
    eprintln!(
        "10,000 idle connections: server memory grew {} KiB ({} bytes each)",
        grown >> 10,
        grown / 10_000
    );
    assert!(
        grown < 128 << 20,
        "10,000 idle connections took {grown} bytes"
    );
    drop(idle);
}

#[test]
fn idle_connections_and_unfinished_requests_are_closed() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&small_store(dir.path()), None, &["--idle-timeout", "1"]);
    let mut resp = TcpStream::connect(server.resp).unwrap();
    let mut http = TcpStream::connect(server.http).unwrap();
    let mut slow = TcpStream::connect(server.resp).unwrap();
    slow.write_all(b"*2\r\n$3\r\nGET\r\n$2\r\n4").unwrap();
    let started = Instant::now();
    for s in [&mut resp, &mut http] {
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut b = [0u8; 16];
        assert_eq!(
            s.read(&mut b).unwrap_or(0),
            0,
            "an idle connection is closed"
        );
    }
    assert!(started.elapsed() < Duration::from_secs(5));
    // The unfinished command gets the request timeout (10 s), not more.
    slow.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut b = [0u8; 16];
    assert_eq!(slow.read(&mut b).unwrap_or(0), 0);
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(9) && took < Duration::from_secs(15),
        "closed after {took:?}"
    );
    others_are_served(&server);
}

#[test]
fn an_idle_timeout_of_0_never_closes_an_idle_connection() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&small_store(dir.path()), None, &["--idle-timeout", "0"]);
    let mut c = RespClient::connect(server.resp);
    assert_eq!(c.call(&["PING"]), Resp::Simple("PONG".into()));
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(c.call(&["PING"]), Resp::Simple("PONG".into()));
}

#[test]
fn past_the_connection_limit_new_clients_are_told_and_closed() {
    let dir = tempfile::tempdir().unwrap();
    let store = small_store(dir.path());
    // An open-file limit of 200 leaves the server 136 connections.
    let mut child = Command::new("sh")
        .args([
            "-c",
            &format!(
                "ulimit -n 200 && exec {HERD} serve --store {} --resp 127.0.0.1:0 --http 127.0.0.1:0",
                store.display()
            ),
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    let _guard = KillOnDrop(child);
    assert!(line.contains("at most 136 connections"), "{line}");
    let resp: SocketAddr = line
        .split_whitespace()
        .skip_while(|w| *w != "resp")
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let held = open_idle(resp, 136);
    let mut c = RespClient::connect(resp);
    c.send(&[b"PING"]);
    assert_eq!(
        c.try_read().ok(),
        Some(Resp::Error("ERR max number of clients reached".into()))
    );
    drop(held);
    std::thread::sleep(Duration::from_millis(300));
    let mut c = RespClient::connect(resp);
    assert_eq!(c.call(&["PING"]), Resp::Simple("PONG".into()));
}

struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A store of `users` integer ids, each with a top-`k` list.
fn wide_top_k_store(dir: &Path, users: u64, k: u32) -> PathBuf {
    use herd::model::{EntityIds, Predictions};
    let path = dir.join("store");
    let store = Store::open(&path).unwrap();
    let v = store_common::new_version(&store, "wide", users);
    let ids: Vec<u64> = (0..users).collect();
    let mut offsets = vec![0u32];
    let (mut items, mut scores) = (Vec::new(), Vec::new());
    for id in 0..users {
        for j in 0..k {
            items.push(id as u32 * k + j);
            scores.push(1.0 / (j as f32 + 1.5));
        }
        offsets.push(items.len() as u32);
    }
    let preds = Predictions::TopK {
        offsets,
        items,
        scores,
    };
    publish(&store, v, &EntityIds::Int(ids), &preds, 0);
    path
}

#[test]
fn clients_that_never_read_their_batch_replies_hold_little_memory() {
    // 200 ids of top-5000 lists gather about 8 MB of stored values (under
    // the 8 MiB limit) and make about 33 MB of JSON.
    let dir = tempfile::tempdir().unwrap();
    let store = wide_top_k_store(dir.path(), 200, 5000);
    let server = Server::start(&store, None, &[]);
    // One reply read whole: the JSON is as large as said, and well formed.
    let mut h = HttpClient::connect(server.http);
    let ids: Vec<String> = (0..200).map(|i| i.to_string()).collect();
    let body = format!(r#"{{"ids": [{}]}}"#, ids.join(","));
    let r = h.request("POST", "/v1/predictions:batchGet", Some(&body));
    assert_eq!(r.status, 200);
    let json_bytes = r.body.len();
    assert!(json_bytes > 24 << 20, "the reply took {json_bytes} bytes");
    assert_eq!(
        r.json()["predictions"][199]["top_k"][4999]["item"],
        199 * 5000 + 4999
    );
    drop(r);
    let before = server.rss_bytes();
    // Stalled readers: each asks for the whole batch and never reads.
    const STALLED: usize = 8;
    let stalled: Vec<TcpStream> = (0..STALLED)
        .map(|_| {
            let s = TcpStream::connect(server.http).unwrap();
            let small: libc::c_int = 4096;
            // SAFETY: setsockopt on an open socket with a valid int.
            unsafe {
                use std::os::fd::AsRawFd;
                libc::setsockopt(
                    s.as_raw_fd(),
                    libc::SOL_SOCKET,
                    libc::SO_RCVBUF,
                    (&small as *const libc::c_int).cast(),
                    std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                );
            }
            let mut w = &s;
            write!(
                w,
                "POST /v1/predictions:batchGet HTTP/1.1\r\nhost: x\r\ncontent-length: {}\r\n\r\n{body}",
                body.len()
            )
            .unwrap();
            s
        })
        .collect();
    std::thread::sleep(Duration::from_secs(3));
    let grown = server.rss_bytes().saturating_sub(before);
    eprintln!(
        "{STALLED} stalled readers of {} MiB replies: server memory grew {} MiB",
        json_bytes >> 20,
        grown >> 20
    );
    // Whole replies would be STALLED x 33 MB; the gathered values are at
    // most 8 MiB each.
    assert!(
        grown < (STALLED as u64) * (12 << 20),
        "{STALLED} stalled readers grew the server by {grown} bytes"
    );
    others_are_served(&server);
    drop(stalled);
}

/// Reads to the end; `Err` when the connection was reset instead of closed.
fn read_to_close(stream: &mut TcpStream) -> Result<Vec<u8>, std::io::Error> {
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut got = Vec::new();
    stream.read_to_end(&mut got).map(|_| got)
}

#[test]
fn more_keys_than_the_limit_are_refused_and_the_connection_stays() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&small_store(dir.path()), None, &[]);
    let mut c = RespClient::connect(server.resp);
    let keys: Vec<String> = (1..=10_001).map(|k| k.to_string()).collect();
    for command in ["MGET", "EXISTS"] {
        let mut args: Vec<&[u8]> = vec![command.as_bytes()];
        args.extend(keys.iter().map(|k| k.as_bytes()));
        c.send(&args);
        assert_eq!(
            c.read(),
            Resp::Error(format!(
                "ERR too many keys in {command}: 10001 (at most 10000)"
            ))
        );
        assert_eq!(c.call(&["PING"]), Resp::Simple("PONG".into()));
    }
    // 10,000 are answered.
    let mut args: Vec<&[u8]> = vec![b"MGET"];
    args.extend(keys[..10_000].iter().map(|k| k.as_bytes()));
    c.send(&args);
    let Resp::Array(answers) = c.read() else {
        panic!("MGET of 10,000 keys is an array")
    };
    assert_eq!(answers.len(), 10_000);
    assert!(matches!(answers[7], Resp::Bulk(_)));
}

#[test]
fn a_fatal_protocol_error_is_read_by_the_client_before_a_clean_close() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&small_store(dir.path()), None, &[]);
    // A bulk string without its CRLF, then more the server never parses.
    let mut s = TcpStream::connect(server.resp).unwrap();
    let mut input = b"*1\r\n$4\r\nPINGxx".to_vec();
    input.extend(std::iter::repeat_n(b'j', 200_000));
    s.write_all(&input).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let got = read_to_close(&mut s).expect("a close, not a reset");
    assert_eq!(
        String::from_utf8_lossy(&got),
        "-ERR Protocol error: bulk string not followed by CRLF\r\n"
    );
    // A batchGet body over the limit, sent whole without waiting for
    // `100 Continue`: its 413, then a close.
    let mut s = TcpStream::connect(server.http).unwrap();
    let body = vec![b'['; 3 << 20];
    let head = format!(
        "POST /v1/predictions:batchGet HTTP/1.1\r\nhost: x\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(&body).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let got = read_to_close(&mut s).expect("a close, not a reset");
    let text = String::from_utf8_lossy(&got);
    assert!(
        text.starts_with("HTTP/1.1 413") && text.contains("1024 KiB"),
        "{text}"
    );
    others_are_served(&server);
}
