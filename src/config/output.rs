//! `[output]` and its `[[output.sink]]` tables, resolved: where versions are
//! stored, how long predictions stay fresh, how many versions are kept, and
//! the sinks a validated version is pushed to. Pure, as the rest of this room.

use std::path::PathBuf;

use toml::Spanned;

use super::Result;
use super::raw;
use super::source::{Source, quoted, value_kind};

/// The ttl of a job that names none: 7 days ("7d").
pub const DEFAULT_TTL_SECS: u64 = 7 * 86_400;
/// Longest ttl: 100 years, in seconds.
pub const MAX_TTL_SECS: u64 = 100 * 365 * 86_400;
pub const DEFAULT_KEEP_VERSIONS: i64 = 5;
/// Fewest versions kept: the live one and the one before it (for a roll back).
pub const MIN_KEEP_VERSIONS: i64 = 2;
pub const MAX_KEEP_VERSIONS: i64 = 1_000;
#[derive(Clone, Debug, PartialEq)]
pub struct Output {
    pub store: PathBuf,
    /// Seconds a prediction stays fresh.
    pub ttl_secs: u64,
    pub keep_versions: u32,
    /// `[[output.sink]]`, in the order written.
    pub sinks: Vec<SinkSettings>,
}

/// One `[[output.sink]]` table, resolved; its `kind` picks the variant (and
/// the module of `store::sink` that writes it).
#[derive(Clone, Debug, PartialEq)]
pub enum SinkSettings {
    Redis(RedisSettings),
}

/// `[[output.sink]] kind = "redis"`.
#[derive(Clone, Debug, PartialEq)]
pub struct RedisSettings {
    /// As written: `redis://host:port/db`, `rediss://` for TLS,
    /// `redis+cluster://` (or `cluster = true`) for Redis Cluster.
    pub url: String,
    pub tls: bool,
    pub cluster: bool,
    /// Keys `{prefix}:v{N}:{id}`, pointer `{prefix}:live`.
    pub prefix: String,
    pub encoding: RedisEncoding,
}

/// How a Redis sink writes a value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RedisEncoding {
    /// The JSON `herd store get --json` and `herd serve` answer.
    Json,
    /// The store's own value bytes (`store::value`: header, then items and
    /// scores little-endian).
    Binary,
}

/// The key prefix of a Redis sink that names none (`herd serve`'s default).
pub const DEFAULT_SINK_PREFIX: &str = "pred";
/// Longest Redis sink prefix, in bytes.
pub const MAX_SINK_PREFIX_LEN: usize = 256;
/// Most `[[output.sink]]` tables in one job.
pub const MAX_SINKS: usize = 16;
const SINK_KINDS: &[(&str, ())] = &[("redis", ())];
const REDIS_ENCODINGS: &[(&str, RedisEncoding)] = &[
    ("json", RedisEncoding::Json),
    ("binary", RedisEncoding::Binary),
];
/// URL schemes of a Redis sink: (scheme, TLS, cluster).
const REDIS_SCHEMES: &[(&str, bool, bool)] = &[
    ("redis", false, false),
    ("rediss", true, false),
    ("redis+cluster", false, true),
    ("rediss+cluster", true, true),
];

/// Parses a time to live: `"7d"`, `"12h"`, `"30m"`, `"3600s"` or `"3600"`
/// (seconds), into seconds. At least one second, at most [`MAX_TTL_SECS`].
/// An error message starts with the quoted input and says what was expected.
pub fn parse_ttl(s: &str) -> std::result::Result<u64, String> {
    let secs = parse_duration(s)?;
    if secs == 0 {
        return Err(format!(
            "'{s}' is zero, which would make every prediction stale at once; \
             expected at least one second"
        ));
    }
    Ok(secs)
}

/// Parses a grace period (`herd store gc --grace`) as [`parse_ttl`] does,
/// but zero is allowed: unfinished and failed versions go at once.
pub fn parse_grace(s: &str) -> std::result::Result<u64, String> {
    parse_duration(s)
}

/// A duration in the forms [`parse_ttl`] names, zero included.
fn parse_duration(s: &str) -> std::result::Result<u64, String> {
    const EXPECTED: &str = "expected a number of seconds ('3600') or a number followed by \
                            s, m, h or d ('3600s', '30m', '12h', '7d')";
    let (digits, unit) = match s.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => (&s[..i], c),
        Some(_) => (s, 's'),
        None => return Err(format!("'' is empty; {EXPECTED}")),
    };
    let scale: u64 = match unit {
        's' => 1,
        'm' => 60,
        'h' => 3_600,
        'd' => 86_400,
        _ => return Err(format!("'{s}' has the unknown unit '{unit}'; {EXPECTED}")),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("'{s}' is not a duration; {EXPECTED}"));
    }
    let secs = digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(scale))
        .filter(|&n| n <= MAX_TTL_SECS)
        .ok_or_else(|| {
            format!("'{s}' is too long; expected at most {MAX_TTL_SECS} seconds (100 years)")
        })?;
    Ok(secs)
}

impl Source<'_> {
    pub(super) fn output(&self, raw: &raw::OutputTable) -> Result<Output> {
        let store = self.path(&raw.store, "[output] store")?;
        let ttl_secs = match &raw.ttl {
            None => DEFAULT_TTL_SECS,
            Some(v) => match v.get_ref() {
                toml::Value::String(s) => parse_ttl(s)
                    .map_err(|message| self.error(v.span(), format!("[output] ttl = {message}")))?,
                toml::Value::Integer(n) => u64::try_from(*n)
                    .ok()
                    .filter(|&n| (1..=MAX_TTL_SECS).contains(&n))
                    .ok_or_else(|| {
                        self.error(
                            v.span(),
                            format!(
                                "[output] ttl = '{n}' is out of range; expected from 1 to \
                                 {MAX_TTL_SECS} seconds"
                            ),
                        )
                    })?,
                other => {
                    return Err(self.error(
                        v.span(),
                        format!(
                            "[output] ttl = '{other}' is {}; expected a duration string such as \
                             '7d' or an integer number of seconds",
                            value_kind(other)
                        ),
                    ));
                }
            },
        };
        let keep_versions = self.int_or(
            &raw.keep_versions,
            DEFAULT_KEEP_VERSIONS,
            "[output] keep_versions",
            MIN_KEEP_VERSIONS,
            Some(MAX_KEEP_VERSIONS),
        )?;
        let tables = raw.sink.as_deref().unwrap_or_default();
        if tables.len() > MAX_SINKS {
            return Err(self.error(
                tables[MAX_SINKS].kind.span(),
                format!(
                    "[[output.sink]]: {} sinks; at most {MAX_SINKS} are allowed",
                    tables.len()
                ),
            ));
        }
        let sinks = tables
            .iter()
            .map(|t| self.sink(t))
            .collect::<Result<Vec<_>>>()?;
        Ok(Output {
            store,
            ttl_secs,
            keep_versions: keep_versions as u32,
            sinks,
        })
    }

    fn sink(&self, raw: &raw::SinkTable) -> Result<SinkSettings> {
        let () = self.choice(&raw.kind, "[[output.sink]] kind", "a sink kind", SINK_KINDS)?;
        let Some(url) = &raw.url else {
            return Err(self.error(
                raw.kind.span(),
                "[[output.sink]] kind = 'redis' needs url = 'redis://host:port/db'",
            ));
        };
        let (tls, scheme_cluster) = self.redis_url(url)?;
        let prefix = match &raw.prefix {
            None => DEFAULT_SINK_PREFIX.to_string(),
            Some(p) => {
                let s = p.get_ref();
                if s.is_empty()
                    || s.len() > MAX_SINK_PREFIX_LEN
                    || s.chars().any(char::is_whitespace)
                {
                    return Err(self.error(
                        p.span(),
                        format!(
                            "[[output.sink]] prefix = '{s}': expected 1 to {MAX_SINK_PREFIX_LEN} \
                             bytes without spaces"
                        ),
                    ));
                }
                s.clone()
            }
        };
        let encoding = match &raw.encoding {
            None => RedisEncoding::Json,
            Some(e) => self.choice(
                e,
                "[[output.sink]] encoding",
                "an encoding",
                REDIS_ENCODINGS,
            )?,
        };
        Ok(SinkSettings::Redis(RedisSettings {
            url: url.get_ref().clone(),
            tls,
            cluster: scheme_cluster || raw.cluster.as_ref().is_some_and(|c| *c.get_ref()),
            prefix,
            encoding,
        }))
    }

    /// Checks a Redis URL's shape (`scheme://host[:port][/db]`): returns
    /// whether it asks for TLS and for cluster mode.
    fn redis_url(&self, url: &Spanned<String>) -> Result<(bool, bool)> {
        let s = url.get_ref();
        let bad = |why: String| {
            self.error(
                url.span(),
                format!("[[output.sink]] url = '{s}' {why}; expected redis://host:port/db"),
            )
        };
        let Some((scheme, rest)) = s.split_once("://") else {
            return Err(bad("has no scheme".into()));
        };
        let Some(&(_, tls, cluster)) = REDIS_SCHEMES.iter().find(|(name, _, _)| *name == scheme)
        else {
            let names = quoted(REDIS_SCHEMES.iter().map(|(n, _, _)| *n));
            return Err(bad(format!("has scheme '{scheme}', not one of {names}")));
        };
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
        // `[::1]:6379`: the port follows the bracket.
        let after_name = host.rfind(']').map_or(0, |i| i + 1);
        let (name, port) = match host[after_name..].find(':') {
            Some(i) => (&host[..after_name + i], Some(&host[after_name + i + 1..])),
            None => (host, None),
        };
        if name.is_empty() {
            return Err(bad("names no host".into()));
        }
        if let Some(port) = port
            && !port.parse::<u16>().is_ok_and(|p| p != 0)
        {
            return Err(bad(format!(
                "has port '{port}', not a number from 1 to 65535"
            )));
        }
        if !path.is_empty() && path.parse::<u32>().is_err() {
            return Err(bad(format!("has database '{path}', not a number")));
        }
        Ok((tls, cluster))
    }
}
