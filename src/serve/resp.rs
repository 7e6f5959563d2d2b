//! The Redis protocol (RESP2, and RESP3 after `HELLO 3`): a bounded parser
//! and the commands Redis clients send to read keys.
//!
//! The parser is ours rather than a crate's because its limits must act
//! before bytes are buffered: an argument's declared length is refused when
//! its header arrives ([`MAX_ARG_BYTES`]), a command's total when it passes
//! [`MAX_COMMAND_BYTES`], an inline line at [`MAX_INLINE_BYTES`]; and it
//! resumes where it stopped, so a command trickling in byte by byte costs
//! no re-parsing.
//!
//! Commands: `GET`, `MGET`, `EXISTS`, `TTL`, `PTTL`, `PING`, `ECHO`, `INFO`,
//! `DBSIZE`, `HELLO`, `AUTH`, `QUIT`, `RESET`, and the set-up commands of
//! redis-cli, redis-benchmark and redis-py (`CLIENT SETINFO|SETNAME|GETNAME|ID`,
//! `SELECT 0`, `COMMAND [COUNT|DOCS|INFO]`, `CONFIG GET`). Anything else is
//! answered `-ERR unknown command`, writes `-READONLY`.

use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use super::metrics::Command;
use super::reader::{Answer, Batch, ReadError};
use super::{
    MAX_ARG_BYTES, MAX_COMMAND_BYTES, MAX_INLINE_BYTES, MAX_KEYS, REQUEST_TIMEOUT, Shared,
    WRITE_TIMEOUT, now_secs,
};

/// Arguments of one command at most (`MGET` of [`MAX_KEYS`] keys).
pub const MAX_ARGS: usize = MAX_KEYS + 1;
/// Replies are written out once this many bytes are pending.
const FLUSH_BYTES: usize = 64 << 10;
/// The most bytes a multibulk or bulk header line may take (`*10001\r\n`).
const MAX_HEADER_LINE: usize = 32;
/// Buffers above these capacities are freed between commands, so an idle
/// connection holds little.
const KEEP_READ_BUFFER: usize = 8 << 10;
const KEEP_WRITE_BUFFER: usize = 16 << 10;
/// Bytes read at once.
const READ_CHUNK: usize = 4 << 10;

/// Connection ids for `CLIENT ID`.
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// One step of the parser.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Step {
    /// A whole command of this many bytes; its arguments are in `args`.
    Command(usize),
    /// More bytes are needed.
    More,
    /// The client broke the protocol or a limit; the connection closes.
    Bad(String),
}

/// A resumable RESP request parser over the unconsumed front of a buffer.
#[derive(Default)]
pub(crate) struct Parser {
    /// Bytes of the current command parsed so far.
    pos: usize,
    /// Arguments still to read; `None` before the multibulk header.
    remaining: Option<usize>,
    inline: bool,
    /// The arguments, as ranges of the buffer.
    pub args: Vec<Range<usize>>,
}

fn find_crlf(buf: &[u8], from: usize, max_line: usize) -> Result<Option<usize>, ()> {
    let end = buf.len().min(from + max_line);
    match buf[from..end].windows(2).position(|w| w == b"\r\n") {
        Some(i) => Ok(Some(from + i)),
        None if buf.len() - from >= max_line => Err(()),
        None => Ok(None),
    }
}

fn parse_len(digits: &[u8]) -> Option<i64> {
    if digits.is_empty() || digits.len() > 18 {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

impl Parser {
    /// Forgets the command just returned.
    pub fn reset(&mut self) {
        self.pos = 0;
        self.remaining = None;
        self.inline = false;
        self.args.clear();
    }

    /// Whether a command has begun arriving.
    pub fn in_progress(&self) -> bool {
        self.pos > 0 || self.remaining.is_some() || self.inline
    }

    /// Parses on from where the last call stopped. `buf` starts at the
    /// current command and only grows between calls until a command is
    /// returned.
    pub fn step(&mut self, buf: &[u8]) -> Step {
        if self.remaining.is_none() && !self.inline {
            let Some(&first) = buf.first() else {
                return Step::More;
            };
            if first != b'*' {
                self.inline = true;
            } else {
                let line = match find_crlf(buf, 0, MAX_HEADER_LINE) {
                    Err(()) => return Step::Bad("Protocol error: invalid multibulk length".into()),
                    Ok(None) => return Step::More,
                    Ok(Some(i)) => i,
                };
                let n = match parse_len(&buf[1..line]) {
                    Some(n) if n <= MAX_ARGS as i64 => n,
                    _ => return Step::Bad("Protocol error: invalid multibulk length".into()),
                };
                self.pos = line + 2;
                if n <= 0 {
                    return Step::Command(self.pos);
                }
                self.remaining = Some(n as usize);
                self.args.reserve(n as usize);
            }
        }
        if self.inline {
            return self.step_inline(buf);
        }
        while self.remaining.unwrap_or(0) > 0 {
            let Some(&marker) = buf.get(self.pos) else {
                return Step::More;
            };
            if marker != b'$' {
                return Step::Bad(format!(
                    "Protocol error: expected '$', got '{}'",
                    char::from(marker).escape_default()
                ));
            }
            let line = match find_crlf(buf, self.pos, MAX_HEADER_LINE) {
                Err(()) => return Step::Bad("Protocol error: invalid bulk length".into()),
                Ok(None) => return Step::More,
                Ok(Some(i)) => i,
            };
            let len = match parse_len(&buf[self.pos + 1..line]) {
                Some(n) if (0..=MAX_ARG_BYTES as i64).contains(&n) => n as usize,
                _ => {
                    return Step::Bad(format!(
                        "Protocol error: invalid bulk length (arguments are at most {} KiB)",
                        MAX_ARG_BYTES >> 10
                    ));
                }
            };
            let start = line + 2;
            let end = start + len;
            if end + 2 > MAX_COMMAND_BYTES {
                return Step::Bad(format!(
                    "Protocol error: command larger than {} KiB",
                    MAX_COMMAND_BYTES >> 10
                ));
            }
            if buf.len() < end + 2 {
                return Step::More;
            }
            if &buf[end..end + 2] != b"\r\n" {
                return Step::Bad("Protocol error: bulk string not followed by CRLF".into());
            }
            self.args.push(start..end);
            self.pos = end + 2;
            self.remaining = self.remaining.map(|r| r - 1);
        }
        Step::Command(self.pos)
    }

    fn step_inline(&mut self, buf: &[u8]) -> Step {
        let limit = buf.len().min(MAX_INLINE_BYTES);
        let Some(nl) = buf[self.pos.min(limit)..limit]
            .iter()
            .position(|&b| b == b'\n')
            .map(|i| i + self.pos.min(limit))
        else {
            if buf.len() >= MAX_INLINE_BYTES {
                return Step::Bad(format!(
                    "Protocol error: too big inline request (at most {} KiB)",
                    MAX_INLINE_BYTES >> 10
                ));
            }
            self.pos = buf.len();
            return Step::More;
        };
        let line_end = if nl > 0 && buf[nl - 1] == b'\r' {
            nl - 1
        } else {
            nl
        };
        let mut i = 0;
        while i < line_end {
            if buf[i].is_ascii_whitespace() {
                i += 1;
                continue;
            }
            let start = i;
            while i < line_end && !buf[i].is_ascii_whitespace() {
                i += 1;
            }
            if self.args.len() == MAX_ARGS {
                return Step::Bad("Protocol error: too many arguments".into());
            }
            self.args.push(start..i);
        }
        self.pos = nl + 1;
        Step::Command(self.pos)
    }
}

/// RESP reply writers.
struct Reply<'a> {
    out: &'a mut Vec<u8>,
    resp3: bool,
}

impl Reply<'_> {
    fn simple(&mut self, s: &str) {
        self.out.push(b'+');
        self.out.extend_from_slice(s.as_bytes());
        self.out.extend_from_slice(b"\r\n");
    }

    fn error(&mut self, s: &str) {
        self.out.push(b'-');
        // An error line must not break the framing.
        for b in s.bytes() {
            self.out
                .push(if b == b'\r' || b == b'\n' { b' ' } else { b });
        }
        self.out.extend_from_slice(b"\r\n");
    }

    fn int(&mut self, n: i64) {
        self.out.push(b':');
        self.out
            .extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
        self.out.extend_from_slice(b"\r\n");
    }

    fn header(&mut self, marker: u8, n: usize) {
        self.out.push(marker);
        self.out
            .extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
        self.out.extend_from_slice(b"\r\n");
    }

    fn bulk(&mut self, b: &[u8]) {
        self.header(b'$', b.len());
        self.out.extend_from_slice(b);
        self.out.extend_from_slice(b"\r\n");
    }

    fn nil(&mut self) {
        self.out
            .extend_from_slice(if self.resp3 { b"_\r\n" } else { b"$-1\r\n" });
    }

    fn array(&mut self, n: usize) {
        self.header(b'*', n);
    }

    /// A map of `n` pairs (an array of 2n in RESP2).
    fn map(&mut self, n: usize) {
        if self.resp3 {
            self.header(b'%', n);
        } else {
            self.header(b'*', 2 * n);
        }
    }
}

/// What a connection knows about its client.
struct Session {
    id: u64,
    resp3: bool,
    authed: bool,
    name: Option<Vec<u8>>,
}

enum Flow {
    Continue,
    Close,
}

/// The state of one connection.
struct Conn<'s> {
    shared: &'s Shared,
    stream: TcpStream,
    out: Vec<u8>,
    json: Vec<u8>,
    batch: Batch,
    session: Session,
}

/// Serves one RESP connection until the client leaves, breaks a limit or
/// times out.
pub(crate) async fn serve(stream: TcpStream, shared: &Shared) {
    let mut conn = Conn {
        shared,
        stream,
        out: Vec::new(),
        json: Vec::new(),
        batch: Batch::default(),
        session: Session {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            resp3: false,
            authed: !shared.needs_auth(),
            name: None,
        },
    };
    let mut buf: Vec<u8> = Vec::new();
    let mut parser = Parser::default();
    let mut started: Option<tokio::time::Instant> = None;
    loop {
        // Answer every whole command buffered.
        let mut at = 0;
        loop {
            match parser.step(&buf[at..]) {
                Step::More => break,
                Step::Bad(why) => {
                    shared.metrics.protocol_error();
                    Reply {
                        out: &mut conn.out,
                        resp3: conn.session.resp3,
                    }
                    .error(&format!("ERR {why}"));
                    let _ = conn.flush().await;
                    return;
                }
                Step::Command(len) => {
                    let cmd = &buf[at..at + len];
                    let args: Vec<&[u8]> = parser.args.iter().map(|r| &cmd[r.clone()]).collect();
                    let flow = if args.is_empty() {
                        Flow::Continue
                    } else {
                        conn.execute(&args).await
                    };
                    at += len;
                    parser.reset();
                    if matches!(flow, Flow::Close) {
                        let _ = conn.flush().await;
                        return;
                    }
                    if conn.out.len() >= FLUSH_BYTES && conn.flush().await.is_err() {
                        return;
                    }
                }
            }
        }
        buf.drain(..at);
        if !conn.out.is_empty() && conn.flush().await.is_err() {
            return;
        }
        if buf.is_empty() && buf.capacity() > KEEP_READ_BUFFER {
            buf = Vec::new();
        }
        // Wait for more: a started command must finish within the request
        // timeout, a quiet connection closes after the idle timeout.
        let deadline = if parser.in_progress() || !buf.is_empty() {
            *started.get_or_insert_with(|| tokio::time::Instant::now() + REQUEST_TIMEOUT)
        } else {
            started = None;
            tokio::time::Instant::now() + shared.idle_timeout
        };
        match conn.read_more(&mut buf, deadline).await {
            Ok(true) => {}
            Ok(false) => return,
            Err(()) => {
                shared.metrics.timed_out();
                return;
            }
        }
    }
}

impl Conn<'_> {
    async fn flush(&mut self) -> Result<(), ()> {
        let write = tokio::time::timeout(WRITE_TIMEOUT, self.stream.write_all(&self.out)).await;
        self.out.clear();
        if self.out.capacity() > KEEP_WRITE_BUFFER {
            self.out = Vec::new();
        }
        match write {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(()),
            Err(_) => {
                self.shared.metrics.timed_out();
                Err(())
            }
        }
    }

    /// Reads what the client sent next into `buf`. `Ok(false)`: the client
    /// closed; `Err`: the deadline passed.
    async fn read_more(
        &mut self,
        buf: &mut Vec<u8>,
        deadline: tokio::time::Instant,
    ) -> Result<bool, ()> {
        loop {
            // Idle connections hold no buffer until bytes arrive.
            match tokio::time::timeout_at(deadline, self.stream.readable()).await {
                Err(_) => return Err(()),
                Ok(Err(_)) => return Ok(false),
                Ok(Ok(())) => {}
            }
            buf.reserve(READ_CHUNK);
            match self.stream.try_read_buf(buf) {
                Ok(0) => return Ok(false),
                Ok(_) => return Ok(true),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                Err(_) => return Ok(false),
            }
        }
    }

    fn reply(&mut self) -> Reply<'_> {
        Reply {
            out: &mut self.out,
            resp3: self.session.resp3,
        }
    }

    async fn execute(&mut self, args: &[&[u8]]) -> Flow {
        let started = Instant::now();
        let name = args[0];
        let is = |n: &str| name.eq_ignore_ascii_case(n.as_bytes());
        let kind = if is("get") {
            Command::Get
        } else if is("mget") {
            Command::Mget
        } else if is("exists") {
            Command::Exists
        } else if is("ttl") || is("pttl") {
            Command::Ttl
        } else {
            Command::Other
        };
        let before = self.out.len();
        let flow = self.dispatch(args).await;
        // Every reply but MGET's is one value; an error is one line starting
        // with '-'. (An MGET flushed mid-way counts as no error.)
        let error = self.out.get(before) == Some(&b'-');
        self.shared.metrics.resp(kind, error, started.elapsed());
        flow
    }

    fn arity_error(&mut self, name: &[u8]) -> Flow {
        let name = String::from_utf8_lossy(name).to_lowercase();
        self.reply().error(&format!(
            "ERR wrong number of arguments for '{name}' command"
        ));
        Flow::Continue
    }

    async fn dispatch(&mut self, args: &[&[u8]]) -> Flow {
        let name = args[0];
        let is = |n: &str| name.eq_ignore_ascii_case(n.as_bytes());
        if !(self.session.authed || is("auth") || is("hello") || is("quit")) {
            self.reply().error("NOAUTH Authentication required.");
            return Flow::Continue;
        }
        if is("get") {
            if args.len() != 2 {
                return self.arity_error(name);
            }
            self.get(args[1]);
        } else if is("mget") {
            if args.len() < 2 {
                return self.arity_error(name);
            }
            return self.mget(&args[1..]).await;
        } else if is("exists") {
            if args.len() < 2 {
                return self.arity_error(name);
            }
            self.exists(&args[1..]).await;
        } else if is("ttl") || is("pttl") {
            if args.len() != 2 {
                return self.arity_error(name);
            }
            self.ttl(args[1], is("pttl"));
        } else if is("ping") {
            match args.len() {
                1 => self.reply().simple("PONG"),
                2 => self.reply().bulk(args[1]),
                _ => return self.arity_error(name),
            }
        } else if is("echo") {
            if args.len() != 2 {
                return self.arity_error(name);
            }
            self.reply().bulk(args[1]);
        } else if is("quit") {
            self.reply().simple("OK");
            return Flow::Close;
        } else if is("reset") {
            self.session.resp3 = false;
            self.session.authed = !self.shared.needs_auth();
            self.session.name = None;
            self.reply().simple("RESET");
        } else if is("auth") {
            self.auth(args);
        } else if is("hello") {
            self.hello(args);
        } else if is("select") {
            if args.len() != 2 {
                return self.arity_error(name);
            }
            if args[1] == b"0" {
                self.reply().simple("OK");
            } else {
                self.reply()
                    .error("ERR DB index is out of range (herd serve has one database, 0)");
            }
        } else if is("client") {
            self.client(args);
        } else if is("command") {
            self.command(args);
        } else if is("config") {
            self.config(args);
        } else if is("info") {
            self.info();
        } else if is("dbsize") {
            let rows = self
                .shared
                .reader
                .live_rows()
                .ok()
                .flatten()
                .map_or(0, |(_, r)| r);
            self.reply().int(rows as i64);
        } else if [
            "set", "del", "unlink", "mset", "setex", "expire", "flushdb", "flushall",
        ]
        .iter()
        .any(|c| is(c))
        {
            self.reply().error(
                "READONLY herd serve answers reads only; predictions are written by `herd run`",
            );
        } else {
            let mut msg = format!(
                "ERR unknown command '{}', with args beginning with: ",
                lossy(name, 64)
            );
            for a in args.iter().skip(1).take(8) {
                msg.push_str(&format!("'{}' ", lossy(a, 64)));
            }
            self.reply().error(&msg);
        }
        Flow::Continue
    }

    /// Reads `keys` in one transaction; the error reply is written on failure.
    fn read(&mut self, keys: &[&[u8]]) -> bool {
        let outcome = self
            .shared
            .reader
            .read(keys.iter().copied(), &mut self.batch);
        match outcome {
            Ok(()) => true,
            Err(e) => {
                let msg = match e {
                    ReadError::TooLarge => format!("ERR {e}"),
                    ReadError::Store(e) => format!("ERR {e}"),
                };
                self.reply().error(&msg);
                false
            }
        }
    }

    /// Writes answer `i` as a GET reply.
    fn answer(&mut self, i: usize, now: u64) {
        match &self.batch.answers[i] {
            Answer::Hit(_) => {
                self.json.clear();
                self.batch.write_json(i, now, &mut self.json);
                let mut r = Reply {
                    out: &mut self.out,
                    resp3: self.session.resp3,
                };
                r.bulk(&self.json);
            }
            Answer::Live(Some(v)) => {
                let text = v.to_string();
                self.reply().bulk(text.as_bytes());
            }
            Answer::Live(None) | Answer::Missing | Answer::NoVersion(_) => self.reply().nil(),
        }
    }

    fn get(&mut self, key: &[u8]) {
        if self.read(&[key]) {
            self.answer(0, now_secs());
        }
        self.batch.shrink();
    }

    async fn mget(&mut self, keys: &[&[u8]]) -> Flow {
        if keys.len() > MAX_KEYS {
            self.reply()
                .error(&format!("ERR MGET of more than {MAX_KEYS} keys"));
            return Flow::Continue;
        }
        let _permit = self.shared.batches.acquire().await;
        if self.read(keys) {
            let now = now_secs();
            self.reply().array(keys.len());
            for i in 0..keys.len() {
                self.answer(i, now);
                if self.out.len() >= FLUSH_BYTES && self.flush().await.is_err() {
                    self.batch.shrink();
                    return Flow::Close;
                }
            }
        }
        self.batch.shrink();
        Flow::Continue
    }

    async fn exists(&mut self, keys: &[&[u8]]) {
        if keys.len() > MAX_KEYS {
            self.reply()
                .error(&format!("ERR EXISTS of more than {MAX_KEYS} keys"));
            return;
        }
        let _permit = if keys.len() > 1 {
            Some(self.shared.batches.acquire().await)
        } else {
            None
        };
        if self.read(keys) {
            let n = self
                .batch
                .answers
                .iter()
                .filter(|a| matches!(a, Answer::Hit(_) | Answer::Live(Some(_))))
                .count();
            self.reply().int(n as i64);
        }
        self.batch.shrink();
    }

    /// Seconds (or ms) until the prediction goes stale; 0 once stale, -1 for
    /// the live pointer (it never expires), -2 when missing.
    fn ttl(&mut self, key: &[u8], millis: bool) {
        if !self.read(&[key]) {
            return;
        }
        let n = match &self.batch.answers[0] {
            Answer::Live(Some(_)) => -1,
            Answer::Hit(_) => {
                let secs = self.batch.ttl_left(0, now_secs()).unwrap_or(0);
                let secs = i64::try_from(secs).unwrap_or(i64::MAX);
                if millis {
                    secs.saturating_mul(1000)
                } else {
                    secs
                }
            }
            _ => -2,
        };
        self.batch.shrink();
        self.reply().int(n);
    }

    fn auth(&mut self, args: &[&[u8]]) {
        let (user, password) = match args.len() {
            2 => (&b"default"[..], args[1]),
            3 => (args[1], args[2]),
            _ => {
                self.arity_error(args[0]);
                return;
            }
        };
        if !self.shared.needs_auth() {
            self.reply().error(
                "ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?",
            );
            return;
        }
        if user == b"default" && self.shared.password_matches(password) {
            self.session.authed = true;
            self.reply().simple("OK");
        } else {
            self.reply()
                .error("WRONGPASS invalid username-password pair or user is disabled.");
        }
    }

    fn hello(&mut self, args: &[&[u8]]) {
        let mut proto = None;
        let mut i = 1;
        if let Some(v) = args.get(1) {
            match std::str::from_utf8(v)
                .ok()
                .and_then(|s| s.parse::<u32>().ok())
            {
                Some(p @ (2 | 3)) => proto = Some(p),
                Some(_) => {
                    self.reply().error("NOPROTO unsupported protocol version");
                    return;
                }
                None => {
                    self.reply()
                        .error("ERR Protocol version is not an integer or out of range");
                    return;
                }
            }
            i = 2;
        }
        let mut name = None;
        while i < args.len() {
            let opt = args[i];
            if opt.eq_ignore_ascii_case(b"auth") && i + 2 < args.len() {
                let (user, pass) = (args[i + 1], args[i + 2]);
                if !self.shared.needs_auth()
                    || (user == b"default" && self.shared.password_matches(pass))
                {
                    self.session.authed = true;
                } else {
                    self.reply()
                        .error("WRONGPASS invalid username-password pair or user is disabled.");
                    return;
                }
                i += 3;
            } else if opt.eq_ignore_ascii_case(b"setname") && i + 1 < args.len() {
                name = Some(args[i + 1].to_vec());
                i += 2;
            } else {
                self.reply().error(&format!(
                    "ERR Syntax error in HELLO option '{}'",
                    lossy(opt, 64)
                ));
                return;
            }
        }
        if !self.session.authed {
            self.reply().error(
                "NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time",
            );
            return;
        }
        if let Some(p) = proto {
            self.session.resp3 = p == 3;
        }
        if name.is_some() {
            self.session.name = name;
        }
        let id = self.session.id as i64;
        let proto = if self.session.resp3 { 3 } else { 2 };
        let mut r = self.reply();
        r.map(7);
        r.bulk(b"server");
        r.bulk(b"herd");
        r.bulk(b"version");
        r.bulk(env!("CARGO_PKG_VERSION").as_bytes());
        r.bulk(b"proto");
        r.int(proto);
        r.bulk(b"id");
        r.int(id);
        r.bulk(b"mode");
        r.bulk(b"standalone");
        r.bulk(b"role");
        r.bulk(b"master");
        r.bulk(b"modules");
        r.array(0);
    }

    fn client(&mut self, args: &[&[u8]]) {
        let Some(sub) = args.get(1) else {
            self.arity_error(args[0]);
            return;
        };
        let is = |n: &str| sub.eq_ignore_ascii_case(n.as_bytes());
        if is("setinfo") || is("no-evict") || is("no-touch") {
            self.reply().simple("OK");
        } else if is("setname") {
            match args.get(2) {
                Some(name) => {
                    self.session.name = Some(name.to_vec());
                    self.reply().simple("OK");
                }
                None => {
                    self.arity_error(b"client|setname");
                }
            }
        } else if is("getname") {
            match self.session.name.clone() {
                Some(n) => self.reply().bulk(&n),
                None => self.reply().nil(),
            }
        } else if is("id") {
            let id = self.session.id as i64;
            self.reply().int(id);
        } else {
            self.reply().error(&format!(
                "ERR unknown subcommand '{}'. Try CLIENT HELP.",
                lossy(sub, 64)
            ));
        }
    }

    fn command(&mut self, args: &[&[u8]]) {
        match args.get(1) {
            None => self.reply().array(0),
            Some(sub) if sub.eq_ignore_ascii_case(b"count") => self.reply().int(0),
            Some(sub) if sub.eq_ignore_ascii_case(b"docs") => self.reply().map(0),
            Some(sub) if sub.eq_ignore_ascii_case(b"info") => {
                let n = args.len() - 2;
                let mut r = self.reply();
                r.array(n);
                for _ in 0..n {
                    r.nil();
                }
            }
            Some(sub) => self.reply().error(&format!(
                "ERR unknown subcommand '{}'. Try COMMAND HELP.",
                lossy(sub, 64)
            )),
        }
    }

    /// `CONFIG GET`: what redis-benchmark asks (`save`, `appendonly`); every
    /// other parameter is absent.
    fn config(&mut self, args: &[&[u8]]) {
        let get = args.get(1).is_some_and(|s| s.eq_ignore_ascii_case(b"get"));
        if !get || args.len() < 3 {
            self.reply()
                .error("ERR herd serve supports only CONFIG GET parameter");
            return;
        }
        let known: [(&[u8], &[u8]); 2] = [(b"save", b""), (b"appendonly", b"no")];
        let found: Vec<(&[u8], &[u8])> = known
            .iter()
            .filter(|(k, _)| args[2..].iter().any(|a| a.eq_ignore_ascii_case(k)))
            .copied()
            .collect();
        let mut r = self.reply();
        r.map(found.len());
        for (k, v) in found {
            r.bulk(k);
            r.bulk(v);
        }
    }

    fn info(&mut self) {
        let shared = self.shared;
        let (store_line, live, rows) = match shared.reader.live_rows() {
            Ok(Some((v, rows))) => ("ok".to_string(), v.to_string(), rows),
            Ok(None) => ("ok".to_string(), "none".to_string(), 0),
            Err(e) => (e.to_string(), "none".to_string(), 0),
        };
        // `redis_version` is the Redis release whose commands these answers
        // follow: some clients read it to choose which commands to send.
        let text = format!(
            "# Server\r\nherd_version:{}\r\nredis_version:7.0.0\r\nredis_mode:standalone\r\nuptime_in_seconds:{}\r\n\
             \r\n# Clients\r\nconnected_clients:{}\r\n\
             \r\n# Store\r\nstore_dir:{}\r\nstore:{}\r\nlive_version:{}\r\nrows:{}\r\n\
             \r\n# Keyspace\r\ndb0:keys={},expires={},avg_ttl=0\r\n",
            env!("CARGO_PKG_VERSION"),
            shared.started.elapsed().as_secs(),
            shared.metrics.open_connections(),
            shared.reader.dir().display(),
            store_line,
            live,
            rows,
            rows,
            rows,
        );
        self.reply().bulk(text.as_bytes());
    }
}

fn lossy(b: &[u8], max: usize) -> String {
    let s = String::from_utf8_lossy(&b[..b.len().min(max)]);
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_all(input: &[u8]) -> (Vec<Vec<Vec<u8>>>, Step) {
        let mut p = Parser::default();
        let mut at = 0;
        let mut out = Vec::new();
        loop {
            match p.step(&input[at..]) {
                Step::Command(len) => {
                    let cmd = &input[at..at + len];
                    out.push(p.args.iter().map(|r| cmd[r.clone()].to_vec()).collect());
                    at += len;
                    p.reset();
                }
                other => return (out, other),
            }
        }
    }

    #[test]
    fn pipelined_multibulk_and_inline_commands() {
        let (cmds, rest) =
            parse_all(b"*2\r\n$3\r\nGET\r\n$2\r\n42\r\nPING\r\n  get   7 \n*1\r\n$4\r\nPI");
        assert_eq!(rest, Step::More);
        assert_eq!(
            cmds,
            vec![
                vec![b"GET".to_vec(), b"42".to_vec()],
                vec![b"PING".to_vec()],
                vec![b"get".to_vec(), b"7".to_vec()],
            ]
        );
    }

    #[test]
    fn a_command_arriving_byte_by_byte_parses_once_whole() {
        let input = b"*3\r\n$4\r\nMGET\r\n$1\r\na\r\n$0\r\n\r\n";
        let mut p = Parser::default();
        for n in 1..input.len() {
            assert_eq!(p.step(&input[..n]), Step::More, "after {n} bytes");
        }
        assert_eq!(p.step(input), Step::Command(input.len()));
        assert_eq!(p.args.len(), 3);
        assert_eq!(&input[p.args[2].clone()], b"");
    }

    #[test]
    fn a_huge_bulk_length_is_refused_before_its_bytes_arrive() {
        let (_, step) = parse_all(b"*2\r\n$3\r\nGET\r\n$1000000000\r\n");
        assert!(matches!(step, Step::Bad(m) if m.contains("invalid bulk length")));
        let (_, step) = parse_all(b"*99999999\r\n");
        assert!(matches!(step, Step::Bad(m) if m.contains("multibulk length")));
        // A header line that never ends.
        let (_, step) = parse_all(&[b'*'; 64]);
        assert!(matches!(step, Step::Bad(_)));
    }

    #[test]
    fn a_command_over_the_total_limit_is_refused_from_its_headers() {
        let command = |args: usize| {
            let mut input = format!("*{}\r\n$4\r\nMGET\r\n", args + 1).into_bytes();
            let mut data_starts = Vec::new();
            for _ in 0..args {
                input.extend_from_slice(format!("${MAX_ARG_BYTES}\r\n").as_bytes());
                data_starts.push(input.len());
                input.extend_from_slice(&vec![b'k'; MAX_ARG_BYTES]);
                input.extend_from_slice(b"\r\n");
            }
            (input, data_starts)
        };
        let (fits, _) = command(3);
        assert!(fits.len() < MAX_COMMAND_BYTES);
        assert_eq!(parse_all(&fits).1, Step::More);
        assert_eq!(parse_all(&fits).0.len(), 1);
        // The fourth argument's header alone gives it away: its bytes are
        // never waited for.
        let (over, starts) = command(4);
        let (_, step) = parse_all(&over[..starts[3]]);
        assert!(matches!(step, Step::Bad(m) if m.contains("larger than")));
    }

    #[test]
    fn an_inline_line_without_end_is_refused_at_the_limit() {
        let line = vec![b'a'; MAX_INLINE_BYTES - 1];
        assert_eq!(parse_all(&line).1, Step::More);
        let line = vec![b'a'; MAX_INLINE_BYTES];
        assert!(matches!(parse_all(&line).1, Step::Bad(m) if m.contains("inline")));
    }

    #[test]
    fn bulk_data_must_end_in_crlf() {
        let (_, step) = parse_all(b"*1\r\n$4\r\nPINGxx");
        assert!(matches!(step, Step::Bad(m) if m.contains("CRLF")));
    }

    #[test]
    fn empty_multibulk_is_skipped() {
        let (cmds, rest) = parse_all(b"*0\r\n*-1\r\nPING\r\n");
        assert_eq!(rest, Step::More);
        assert_eq!(cmds.len(), 3);
        assert!(cmds[0].is_empty() && cmds[1].is_empty());
    }
}
