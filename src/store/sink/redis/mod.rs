//! The Redis sink: a validated version goes to a Redis server as
//! `{prefix}:v{N}:{id}` keys (the JSON `herd serve` answers, or the stored
//! value bytes), each with the time its prediction has left as its expiry;
//! after LMDB flipped, one `SET {prefix}:live N` moves the sink's readers.
//!
//! A reader asks `GET {prefix}:live`, then `GET {prefix}:v{N}:{id}`: keys of a
//! version are all written (and their count checked) before the pointer
//! names it, and the pointer changes in one command, so a reader sees a whole
//! version or the one before, never half of one. A push that fails leaves
//! the pointer where it was, and unlinks the keys of the version it had
//! written. A push first claims its version's keys (`{prefix}:v{N}` holds
//! the owner), and refuses to start when the pointer already names that
//! version or a newer one, or another store holds the claim: two stores
//! sharing a prefix would otherwise write over (or unlink) each other's
//! keys. Retention drops the keys of the versions LMDB dropped, with
//! `SCAN` and `UNLINK`.
//!
//! A server's keys are written over [`lanes::LANES`] connections at once,
//! each pipelining whole batches, with bounded memory (see [`lanes`]); a
//! cluster's go through the cluster client in pipelined batches of
//! [`BATCH_ENTRIES`].

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use redis::Value as Reply;

use crate::config::RedisSettings;
use crate::store::json;
use crate::store::{ValueRef, VersionRecord};

use super::Sink;

mod lanes;

pub use lanes::{BATCH_BYTES, BATCH_ENTRIES, LANES, MAX_BATCHES};
use lanes::{Encoder, Lanes};
/// How long connecting, or any one reply, may take.
pub const TIMEOUT: Duration = Duration::from_secs(30);
/// Keys one `SCAN` step asks for while retention looks for old versions.
const SCAN_COUNT: usize = 1_000;

/// The connection: one server, or a Redis Cluster.
enum Conn {
    Single(redis::Connection),
    Cluster(Box<redis::cluster::ClusterConnection>),
}

/// Writes validated versions to a Redis server or cluster.
pub struct RedisSink {
    settings: RedisSettings,
    /// For the pointer, retention, and a cluster's pushes.
    conn: Option<Conn>,
    /// The version being pushed.
    version: u64,
    expected: u64,
    encoder: Arc<Encoder>,
    /// A single server's push under way.
    lanes: Option<Lanes>,
    /// The batch under way in cluster mode (the cluster routes each key).
    cluster_batch: Vec<(Vec<u8>, Vec<u8>, u64)>,
    /// Keys put so far, and keys a cluster acknowledged.
    put: u64,
    acknowledged: u64,
    scratch: Vec<u8>,
    key: Vec<u8>,
}

impl RedisSink {
    /// A sink for `settings`; checks now that the server answers `PING`, so
    /// a wrong address fails the run before any work, not after it.
    pub fn open(settings: RedisSettings) -> Result<RedisSink, String> {
        let encoder = Arc::new(Encoder {
            key_prefix: Vec::new(),
            version: 0,
            id_kind: None,
            encoding: settings.encoding,
            model_version_json: String::new(),
            now: 0,
        });
        let mut sink = RedisSink {
            settings,
            conn: None,
            version: 0,
            expected: 0,
            encoder,
            lanes: None,
            cluster_batch: Vec::new(),
            put: 0,
            acknowledged: 0,
            scratch: Vec::new(),
            key: Vec::new(),
        };
        sink.connect()?;
        Ok(sink)
    }

    /// The URL the client library reads: the `+cluster` marker dropped.
    fn client_url(&self) -> String {
        let url = &self.settings.url;
        match url.split_once("://") {
            Some((scheme, rest)) => {
                format!("{}://{rest}", scheme.trim_end_matches("+cluster"))
            }
            None => url.clone(),
        }
    }

    /// Opens the connection (again, when the last one failed).
    fn connect(&mut self) -> Result<(), String> {
        let url = self.client_url();
        let conn = if self.settings.cluster {
            let client = redis::cluster::ClusterClientBuilder::new(vec![url.as_str()])
                .connection_timeout(TIMEOUT)
                .response_timeout(TIMEOUT)
                .build()
                .map_err(|e| format!("bad url: {e}"))?;
            let mut conn = client
                .get_connection()
                .map_err(|e| format!("cannot connect: {e}"))?;
            redis::cmd("PING")
                .query::<String>(&mut conn)
                .map_err(|e| format!("PING failed: {e}"))?;
            Conn::Cluster(Box::new(conn))
        } else {
            Conn::Single(self.connect_single()?)
        };
        self.conn = Some(conn);
        Ok(())
    }

    /// A connection to a single server, with timeouts, answering `PING`.
    fn connect_single(&self) -> Result<redis::Connection, String> {
        let url = self.client_url();
        let client = redis::Client::open(url.as_str()).map_err(|e| format!("bad url: {e}"))?;
        let mut conn = client
            .get_connection_with_timeout(TIMEOUT)
            .map_err(|e| format!("cannot connect: {e}"))?;
        conn.set_read_timeout(Some(TIMEOUT))
            .and_then(|()| conn.set_write_timeout(Some(TIMEOUT)))
            .map_err(|e| format!("cannot set timeouts: {e}"))?;
        redis::cmd("PING")
            .query::<String>(&mut conn)
            .map_err(|e| format!("PING failed: {e}"))?;
        Ok(conn)
    }

    /// The connection, opened again if the last one was lost.
    fn conn(&mut self) -> Result<&mut Conn, String> {
        let open = match &self.conn {
            Some(Conn::Single(c)) => redis::ConnectionLike::is_open(c),
            Some(Conn::Cluster(_)) => true,
            None => false,
        };
        if !open {
            self.connect()?;
        }
        Ok(self.conn.as_mut().expect("connected above"))
    }

    fn send_cluster_batch(&mut self) -> Result<(), String> {
        if self.cluster_batch.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::cluster::cluster_pipe();
        for (key, value, ex) in &self.cluster_batch {
            pipe.cmd("SET").arg(key).arg(value).arg("EX").arg(*ex);
        }
        let first = self.put - self.cluster_batch.len() as u64;
        self.cluster_batch.clear();
        let Conn::Cluster(conn) = self.conn()? else {
            unreachable!("cluster mode holds a cluster connection")
        };
        let replies: Vec<Reply> = pipe
            .query(conn)
            .map_err(|e| format!("keys {first}.. of the version: {e}"))?;
        for (i, reply) in replies.into_iter().enumerate() {
            match reply {
                Reply::Okay => self.acknowledged += 1,
                other => {
                    return Err(format!(
                        "key {} of the version was refused: {other:?}",
                        first + i as u64
                    ));
                }
            }
        }
        Ok(())
    }

    /// Runs one command on the server (or the cluster node its key lives on).
    fn command<T: redis::FromRedisValue>(&mut self, cmd: &redis::Cmd) -> Result<T, String> {
        let result = match self.conn()? {
            Conn::Single(c) => cmd.query(c),
            Conn::Cluster(c) => cmd.query(c),
        };
        result.map_err(|e| e.to_string())
    }

    /// Deletes every key of `versions` on one server: `SCAN` for
    /// `{prefix}:v*`, `UNLINK` the keys of those versions. Returns the count.
    fn unlink_on(
        conn: &mut redis::Connection,
        prefix: &str,
        versions: &[u64],
    ) -> Result<u64, String> {
        let pattern = format!("{}:v*", glob_escape(prefix));
        let mut cursor: u64 = 0;
        let mut unlinked = 0;
        loop {
            let (next, keys): (u64, Vec<Vec<u8>>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(SCAN_COUNT)
                .query(conn)
                .map_err(|e| format!("SCAN failed: {e}"))?;
            let doomed: Vec<&Vec<u8>> = keys
                .iter()
                .filter(|k| key_version(k, prefix).is_some_and(|v| versions.contains(&v)))
                .collect();
            if !doomed.is_empty() {
                // One key per UNLINK: a cluster node refuses a command whose
                // keys lie in different slots, even slots it holds.
                let mut pipe = redis::pipe();
                for key in &doomed {
                    pipe.cmd("UNLINK").arg(key);
                }
                let counts: Vec<u64> = pipe
                    .query(conn)
                    .map_err(|e| format!("UNLINK failed: {e}"))?;
                unlinked += counts.iter().sum::<u64>();
            }
            if next == 0 {
                return Ok(unlinked);
            }
            cursor = next;
        }
    }

    /// Claims the server's keys of `version` for this push, so that a push
    /// never writes over (nor, failing, unlinks) another store's keys: the
    /// pointer must name an older version (versions only grow within a
    /// store), and `SET {prefix}:v{N} OWNER NX` must succeed or find this
    /// very version's owner (a retried push of it).
    fn claim(&mut self, version: &VersionRecord) -> Result<(), String> {
        let n = version.version;
        let prefix = self.settings.prefix.clone();
        let pointer = format!("{prefix}:live");
        let live: Option<String> = self.command(redis::cmd("GET").arg(&pointer))?;
        if let Some(m) = live.as_deref().and_then(|v| v.parse::<u64>().ok())
            && m >= n
        {
            return Err(format!(
                "{pointer} already names version {m}, and this push is version {n}: another \
                 store (or an earlier store) writes here with prefix '{prefix}'; give each \
                 store's sink a prefix of its own (nothing was written)"
            ));
        }
        let marker = format!("{prefix}:v{n}");
        let owner = owner_of(version);
        let mut set = redis::cmd("SET");
        set.arg(&marker).arg(&owner).arg("NX");
        if version.ttl_secs > 0 {
            set.arg("EX").arg(version.ttl_secs);
        }
        let taken: Option<String> = self.command(&set)?;
        if taken.is_none() {
            let held: Option<String> = self.command(redis::cmd("GET").arg(&marker))?;
            if held.as_deref() != Some(owner.as_str()) {
                return Err(format!(
                    "{marker} says the keys of version {n} belong to '{}', not to this push \
                     ('{owner}'): another store writes here with prefix '{prefix}'; give each \
                     store's sink a prefix of its own (nothing was written)",
                    held.unwrap_or_default()
                ));
            }
        }
        Ok(())
    }

    /// The primaries of the cluster, as URLs the client library reads.
    fn cluster_primaries(&mut self) -> Result<Vec<String>, String> {
        let nodes: String = self.command(&redis::cmd("CLUSTER").arg("NODES").clone())?;
        let scheme = if self.settings.tls { "rediss" } else { "redis" };
        let mut urls = Vec::new();
        for line in nodes.lines() {
            let fields: Vec<&str> = line.split(' ').collect();
            if fields.len() < 3 || !fields[2].split(',').any(|f| f == "master") {
                continue;
            }
            // `ip:port@cport[,hostname]`
            let addr = fields[1].split(['@', ',']).next().unwrap_or("");
            if !addr.is_empty() && !addr.starts_with(':') {
                urls.push(format!("{scheme}://{addr}"));
            }
        }
        Ok(urls)
    }
}

/// `url` as messages show it: a password in it replaced by `***`.
pub fn shown_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let (authority, path) = rest
        .split_once('/')
        .map_or((rest, None), |(a, p)| (a, Some(p)));
    let Some((user_info, host)) = authority.rsplit_once('@') else {
        return url.to_string();
    };
    let user = user_info.split_once(':').map_or(user_info, |(u, _)| u);
    let password = if user_info.contains(':') { ":***" } else { "" };
    let path = path.map(|p| format!("/{p}")).unwrap_or_default();
    format!("{scheme}://{user}{password}@{host}{path}")
}

/// `prefix` with the glob characters `SCAN MATCH` reads escaped.
/// Who pushes a version: its job, creation time and fingerprint (input,
/// model and settings), the same for a retried push of it and different
/// for another store's version of the same number.
fn owner_of(version: &VersionRecord) -> String {
    format!(
        "job {} created {} fingerprint {}",
        version.job, version.created, version.fingerprint
    )
}

fn glob_escape(prefix: &str) -> String {
    let mut out = String::with_capacity(prefix.len());
    for c in prefix.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// The version of a sink key `{prefix}:v{N}:{id}`, `None` for other keys.
fn key_version(key: &[u8], prefix: &str) -> Option<u64> {
    let rest = key.strip_prefix(prefix.as_bytes())?.strip_prefix(b":v")?;
    let colon = rest.iter().position(|&b| b == b':')?;
    std::str::from_utf8(&rest[..colon]).ok()?.parse().ok()
}

impl Sink for RedisSink {
    fn name(&self) -> String {
        format!("redis {}", shown_url(&self.settings.url))
    }

    fn pointer(&self) -> String {
        format!("{}, pointer {}:live", self.name(), self.settings.prefix)
    }

    fn begin(&mut self, version: &VersionRecord) -> Result<(), String> {
        // Nothing of this version is written (or cleaned up) before its
        // claim holds.
        self.put = 0;
        self.claim(version)?;
        self.version = version.version;
        self.expected = version.committed_rows;
        let mut model_version_json = Vec::new();
        json::write_str(&mut model_version_json, &version.model_version);
        self.encoder = Arc::new(Encoder {
            key_prefix: format!("{}:v{}:", self.settings.prefix, version.version).into_bytes(),
            version: version.version,
            id_kind: version.id_kind,
            encoding: self.settings.encoding,
            model_version_json: String::from_utf8_lossy(&model_version_json).into_owned(),
            now: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
        });
        if let Some(lanes) = self.lanes.take() {
            lanes.abort();
        }
        self.cluster_batch.clear();
        self.put = 0;
        self.acknowledged = 0;
        // A connection left out of step by an earlier failure is replaced.
        self.conn()?;
        if !self.settings.cluster {
            let connections = (0..LANES)
                .map(|_| self.connect_single())
                .collect::<Result<Vec<_>, _>>()?;
            self.lanes = Some(Lanes::start(connections, self.encoder.clone()));
        }
        Ok(())
    }

    fn put(&mut self, key: &[u8], value: ValueRef<'_>) -> Result<(), String> {
        let id = self.encoder.id(key)?;
        self.put += 1;
        if let Some(lanes) = &mut self.lanes {
            return lanes.put(key, value.as_bytes());
        }
        self.encoder.key(id, &mut self.key);
        let ex = self.encoder.value(id, value, &mut self.scratch);
        self.cluster_batch
            .push((self.key.clone(), self.scratch.clone(), ex));
        if self.cluster_batch.len() >= BATCH_ENTRIES {
            self.send_cluster_batch()?;
        }
        Ok(())
    }

    fn end(&mut self) -> Result<(), String> {
        match self.lanes.take() {
            Some(lanes) => self.acknowledged = lanes.finish()?,
            None => self.send_cluster_batch()?,
        }
        if self.acknowledged != self.put || self.put != self.expected {
            return Err(format!(
                "version {} has {} predictions; {} were put and {} acknowledged",
                self.version, self.expected, self.put, self.acknowledged
            ));
        }
        Ok(())
    }

    fn flip(&mut self, version: u64) -> Result<(), String> {
        let pointer = format!("{}:live", self.settings.prefix);
        self.command::<()>(redis::cmd("SET").arg(&pointer).arg(version))
            .map_err(|e| format!("SET {pointer} {version} failed: {e}"))
    }

    fn abandon(&mut self) -> Result<u64, String> {
        if self.put == 0 {
            return Ok(0);
        }
        // Every connection stops writing before the keys are looked for, so
        // none arrives after the clean-up; a fresh connection keeps commands
        // and replies in step.
        if let Some(lanes) = self.lanes.take() {
            lanes.abort();
        }
        self.cluster_batch.clear();
        self.conn = None;
        let version = self.version;
        self.retire(&[version])
    }

    fn retire(&mut self, versions: &[u64]) -> Result<u64, String> {
        if versions.is_empty() {
            return Ok(0);
        }
        let prefix = self.settings.prefix.clone();
        for v in versions {
            let marker = format!("{prefix}:v{v}");
            self.command::<u64>(redis::cmd("UNLINK").arg(&marker))
                .map_err(|e| format!("UNLINK {marker} failed: {e}"))?;
        }
        if !self.settings.cluster {
            let Conn::Single(conn) = self.conn()? else {
                unreachable!("a single server holds a single connection")
            };
            return RedisSink::unlink_on(conn, &prefix, versions);
        }
        // SCAN walks one node's keys: ask each primary in turn.
        let mut unlinked = 0;
        for url in self.cluster_primaries()? {
            let mut conn = redis::Client::open(url.as_str())
                .and_then(|c| c.get_connection_with_timeout(TIMEOUT))
                .map_err(|e| format!("cannot connect to cluster node {url}: {e}"))?;
            unlinked += RedisSink::unlink_on(&mut conn, &prefix, versions)
                .map_err(|e| format!("cluster node {url}: {e}"))?;
        }
        Ok(unlinked)
    }
}

#[cfg(test)]
mod tests {
    use super::lanes::{expiry, write_command};
    use super::*;

    #[test]
    fn sink_keys_name_their_version() {
        assert_eq!(key_version(b"pred:v7:42", "pred"), Some(7));
        assert_eq!(key_version(b"pred:v7:user:1", "pred"), Some(7));
        assert_eq!(key_version(b"pred:live", "pred"), None);
        assert_eq!(key_version(b"pred:vx:1", "pred"), None);
        assert_eq!(key_version(b"other:v7:1", "pred"), None);
        assert_eq!(key_version(b"predx:v7:1", "pred"), None);
    }

    #[test]
    fn glob_characters_in_a_prefix_match_only_themselves() {
        assert_eq!(glob_escape("a*b?[c]\\"), "a\\*b\\?\\[c\\]\\\\");
        assert_eq!(glob_escape("pred"), "pred");
    }

    #[test]
    fn messages_show_no_password() {
        assert_eq!(
            shown_url("redis://herd:s3cret@10.0.0.1:6379/2"),
            "redis://herd:***@10.0.0.1:6379/2"
        );
        assert_eq!(
            shown_url("rediss://:s3cret@cache:6380"),
            "rediss://:***@cache:6380"
        );
        assert_eq!(
            shown_url("redis://127.0.0.1:6379/0"),
            "redis://127.0.0.1:6379/0"
        );
    }

    #[test]
    fn expiry_is_the_time_left_and_never_zero() {
        assert_eq!(expiry(1_000, 60, 1_010), 50);
        assert_eq!(expiry(1_000, 60, 1_060), 1);
        assert_eq!(expiry(1_000, 60, 5_000), 1);
    }

    #[test]
    fn commands_are_written_in_the_redis_protocol() {
        let mut out = Vec::new();
        write_command(&mut out, &[b"SET", b"k", b"", b"EX", b"5"]);
        assert_eq!(
            out,
            b"*5\r\n$3\r\nSET\r\n$1\r\nk\r\n$0\r\n\r\n$2\r\nEX\r\n$1\r\n5\r\n"
        );
    }
}
