//! The commands clients send to set up a connection and look around:
//! `AUTH`, `HELLO`, `CLIENT`, `COMMAND`, `CONFIG GET`, `INFO`.

use super::{Conn, lossy};

/// `CLIENT HELP`: the subcommands herd serve answers.
const CLIENT_HELP: &[&str] = &[
    "CLIENT <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
    "GETNAME",
    "    Return the name of the current connection.",
    "ID",
    "    Return the ID of the current connection.",
    "SETNAME <name>",
    "    Assign the name <name> to the current connection.",
    "SETINFO <option> <value>",
    "    Accepted (a client library's name and version); nothing is kept.",
    "NO-EVICT|NO-TOUCH (ON|OFF)",
    "    Accepted; herd serve evicts and touches nothing.",
    "HELP",
    "    Print this help.",
];

/// `COMMAND HELP`: what herd serve answers of `COMMAND`.
const COMMAND_HELP: &[&str] = &[
    "COMMAND <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
    "(no subcommand)",
    "    An empty list: herd serve publishes no command table.",
    "COUNT",
    "    0, for the same reason.",
    "DOCS [<command-name> ...]",
    "    An empty map.",
    "INFO [<command-name> ...]",
    "    A nil for each command named.",
    "HELP",
    "    Print this help.",
];
impl Conn<'_> {
    pub(super) fn auth(&mut self, args: &[&[u8]]) {
        let (user, password) = match args.len() {
            2 => (&b"default"[..], args[1]),
            3 => (args[1], args[2]),
            _ => {
                self.arity_error(args[0]);
                return;
            }
        };
        if !self.shared.needs_auth() {
            // As Redis with no password: the default user takes any password
            // when named; a lone password is an error.
            if args.len() == 3 && user == b"default" {
                self.reply().simple("OK");
                return;
            }
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

    pub(super) fn hello(&mut self, args: &[&[u8]]) {
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

    pub(super) fn client(&mut self, args: &[&[u8]]) {
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
        } else if is("help") {
            self.help(CLIENT_HELP);
        } else {
            self.reply().error(&format!(
                "ERR unknown subcommand '{}'. Try CLIENT HELP.",
                lossy(sub, 64)
            ));
        }
    }

    /// A subcommand's help, as Redis answers `... HELP`: one status line each.
    fn help(&mut self, lines: &[&str]) {
        let mut r = self.reply();
        r.array(lines.len());
        for line in lines {
            r.simple(line);
        }
    }

    pub(super) fn command(&mut self, args: &[&[u8]]) {
        match args.get(1) {
            None => self.reply().array(0),
            Some(sub) if sub.eq_ignore_ascii_case(b"count") => self.reply().int(0),
            Some(sub) if sub.eq_ignore_ascii_case(b"docs") => self.reply().map(0),
            Some(sub) if sub.eq_ignore_ascii_case(b"help") => self.help(COMMAND_HELP),
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
    pub(super) fn config(&mut self, args: &[&[u8]]) {
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

    pub(super) fn info(&mut self) {
        let shared = self.shared;
        let (store_line, live, rows) = match shared.reader.live_rows() {
            Ok(Some((v, rows))) => ("ok".to_string(), v.to_string(), rows),
            Ok(None) => ("ok".to_string(), "none".to_string(), 0),
            Err(e) => (e.to_string(), "none".to_string(), 0),
        };
        let (held_version, held_rows, held_bytes) = match shared.reader.held() {
            Some((v, n, bytes)) => (v.to_string(), n, bytes),
            None => ("none".to_string(), 0, 0),
        };
        // `redis_version` is the Redis release whose commands these answers
        // follow: some clients read it to choose which commands to send.
        let text = format!(
            "# Server\r\nherd_version:{}\r\nredis_version:7.0.0\r\nredis_mode:standalone\r\nuptime_in_seconds:{}\r\n\
             \r\n# Clients\r\nconnected_clients:{}\r\n\
             \r\n# Store\r\nstore_dir:{}\r\nstore:{}\r\nlive_version:{}\r\nrows:{}\r\n\
             preloaded_version:{held_version}\r\npreloaded_predictions:{held_rows}\r\npreloaded_bytes:{held_bytes}\r\n\
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
