//! Where a job's input is, and the object-store options that go with it.
//!
//! `[input] path` is a local path (a file, a folder or a glob, resolved
//! beside the job file like every other path) or a URL read through object
//! storage. Any other key that takes a path takes a local one only; there a
//! `file://` URL is accepted and any other scheme is an error, so that
//! `store = "redis://..."` is never taken for a folder named `redis:`.
//!
//! Pure: the URL is parsed and classified, nothing is fetched.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

use super::raw;

/// The URL schemes `[input] path` reads through object storage.
pub const OBJECT_STORE_SCHEMES: &[&str] = &[
    "s3", "s3a", "gs", "az", "azure", "abfs", "abfss", "http", "https",
];

/// Where a job's input is.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(into = "WireLocation", try_from = "WireLocation")]
pub enum Location {
    /// A file, a folder or a glob on the machine that reads it; relative
    /// paths are already joined to the job file's folder. `file://` URLs
    /// land here.
    Local(PathBuf),
    /// An object, a prefix or a glob in object storage or over HTTP (one of
    /// [`OBJECT_STORE_SCHEMES`]).
    Url(url::Url),
}

impl Location {
    /// The local path, for a local input.
    pub fn local(&self) -> Option<&Path> {
        match self {
            Location::Local(p) => Some(p),
            Location::Url(_) => None,
        }
    }
}

/// A [`Location`] as the protocol carries it to workers: the URL as text.
#[derive(serde::Serialize, serde::Deserialize)]
enum WireLocation {
    Local(PathBuf),
    Url(String),
}

impl From<Location> for WireLocation {
    fn from(l: Location) -> WireLocation {
        match l {
            Location::Local(p) => WireLocation::Local(p),
            Location::Url(u) => WireLocation::Url(u.into()),
        }
    }
}

impl TryFrom<WireLocation> for Location {
    type Error = String;

    fn try_from(w: WireLocation) -> Result<Location, String> {
        match w {
            WireLocation::Local(p) => Ok(Location::Local(p)),
            WireLocation::Url(s) => url::Url::parse(&s)
                .map(Location::Url)
                .map_err(|e| format!("'{s}' is not a valid URL: {e}")),
        }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Local(p) => write!(f, "{}", p.display()),
            Location::Url(u) => write!(f, "{u}"),
        }
    }
}

/// `[input.storage]`: how to reach the object store of a URL input.
/// Credentials are never here: they come from the environment, as the
/// providers' own tools read them.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Storage {
    /// The store's base URL, for S3-compatible servers, Azure emulators or a
    /// GCS base URL; `None`: the provider's own.
    pub endpoint: Option<String>,
    /// The S3 region; `None`: from the environment (`AWS_REGION`,
    /// `~/.aws/config`), else us-east-1.
    pub region: Option<String>,
    /// Allow plain-HTTP endpoints (test servers on loopback).
    pub allow_http: bool,
}

/// The scheme of `s` when it starts like a URL (`scheme://`), lower-cased.
fn scheme(s: &str) -> Option<String> {
    let (head, _) = s.split_once("://")?;
    let mut chars = head.chars();
    let first = chars.next()?;
    let ok = first.is_ascii_alphabetic()
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    ok.then(|| head.to_ascii_lowercase())
}

/// A value of a key that takes a local path: `Ok(None)` when it is no URL
/// (the caller joins it beside the job file), the path of a `file://` URL,
/// or an error for any other scheme.
pub(super) fn local_path(s: &str, label: &str) -> Result<Option<PathBuf>, String> {
    match scheme(s).as_deref() {
        None => Ok(None),
        Some("file") => file_path(s, label).map(Some),
        Some(other) => Err(format!(
            "{label} = '{s}' is a {other}:// URL; expected a path on this machine \
             (or a file:// URL)"
        )),
    }
}

fn file_path(s: &str, label: &str) -> Result<PathBuf, String> {
    let url = url::Url::parse(s).map_err(|e| format!("{label} = '{s}' is not a valid URL: {e}"))?;
    url.to_file_path().map_err(|()| {
        format!(
            "{label} = '{s}' is not a local file URL; expected file:///absolute/path \
             (three slashes, no host)"
        )
    })
}

/// `[input] path`: `Ok(None)` when it is a local path or a `file://` URL
/// (the caller resolves it as a path), the URL of an object store, or an
/// error naming the scheme herd does not read.
pub(super) fn input_url(s: &str, label: &str) -> Result<Option<url::Url>, String> {
    let Some(scheme) = scheme(s) else {
        return Ok(None);
    };
    if scheme == "file" {
        return Ok(None);
    }
    if !OBJECT_STORE_SCHEMES.contains(&scheme.as_str()) {
        return Err(format!(
            "{label} = '{s}' has the scheme '{scheme}://', which herd does not read; expected \
             a local path or an s3://, gs://, az://, http(s):// or file:// URL"
        ));
    }
    let url = url::Url::parse(s).map_err(|e| format!("{label} = '{s}' is not a valid URL: {e}"))?;
    if url.host_str().is_none_or(str::is_empty) {
        return Err(format!(
            "{label} = '{s}' names no bucket or host; expected {scheme}://BUCKET/path"
        ));
    }
    Ok(Some(url))
}

/// Keys of `[input.storage]` the parser accepts only to refuse them with a
/// message of their own: credentials are never read from the job file.
pub const CREDENTIAL_KEYS: &[&str] = &[
    "access_key_id",
    "secret_access_key",
    "session_token",
    "account_key",
];

/// `[input.storage]`, checked against the input's URL (`None`: a local
/// input, where the table is not used). Errors carry the span of the value.
pub(super) fn storage(
    table: &raw::StorageTable,
    url: Option<&url::Url>,
) -> Result<Storage, (Range<usize>, String)> {
    for (key, value) in [
        ("access_key_id", &table.access_key_id),
        ("secret_access_key", &table.secret_access_key),
        ("session_token", &table.session_token),
        ("account_key", &table.account_key),
    ] {
        if let Some(v) = value {
            return Err((
                v.span(),
                format!(
                    "[input.storage] {key} is refused: credentials are never read from the job \
                     file; set them in the environment as the provider's tools read them \
                     (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN or \
                     ~/.aws/credentials; GOOGLE_APPLICATION_CREDENTIALS; \
                     AZURE_STORAGE_ACCOUNT_KEY)"
                ),
            ));
        }
    }
    let scheme = url.map(url::Url::scheme);
    let allow_http = table.allow_http.as_ref().is_some_and(|v| *v.get_ref());
    let endpoint = match &table.endpoint {
        None => None,
        Some(v) => {
            let s = v.get_ref();
            let parsed = url::Url::parse(s).map_err(|e| {
                (
                    v.span(),
                    format!(
                        "[input.storage] endpoint = '{s}' is not a URL ({e}); expected \
                         http(s)://host:port"
                    ),
                )
            })?;
            match parsed.scheme() {
                "https" => {}
                "http" if allow_http => {}
                "http" => {
                    return Err((
                        v.span(),
                        format!(
                            "[input.storage] endpoint = '{s}' is plain HTTP; expected an \
                             https:// endpoint, or allow_http = true to send requests \
                             without TLS"
                        ),
                    ));
                }
                other => {
                    return Err((
                        v.span(),
                        format!(
                            "[input.storage] endpoint = '{s}' has the scheme '{other}'; \
                             expected http(s)://host:port"
                        ),
                    ));
                }
            }
            if matches!(scheme, Some("http" | "https")) {
                return Err((
                    v.span(),
                    format!(
                        "[input.storage] endpoint = '{s}' is set, but [input] path is an \
                         {}:// URL, which names its server itself; expected no endpoint",
                        scheme.unwrap_or_default()
                    ),
                ));
            }
            Some(s.trim_end_matches('/').to_string())
        }
    };
    let region = match &table.region {
        None => None,
        Some(v) => {
            let s = v.get_ref();
            if s.is_empty()
                || !s
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'))
            {
                return Err((
                    v.span(),
                    format!(
                        "[input.storage] region = '{s}' is not a region name; expected \
                         letters, digits and '-' (e.g. 'us-east-1')"
                    ),
                ));
            }
            if let Some(scheme) = scheme.filter(|s| !matches!(*s, "s3" | "s3a")) {
                return Err((
                    v.span(),
                    format!(
                        "[input.storage] region = '{s}' is set, but [input] path is a \
                         {scheme}:// URL; expected a region only for s3:// inputs"
                    ),
                ));
            }
            Some(s.clone())
        }
    };
    Ok(Storage {
        endpoint,
        region,
        allow_http,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schemes_are_recognised_only_before_two_slashes() {
        assert_eq!(scheme("s3://b/k").as_deref(), Some("s3"));
        assert_eq!(scheme("S3://b/k").as_deref(), Some("s3"));
        assert_eq!(scheme("redis://127.0.0.1:6379/0").as_deref(), Some("redis"));
        assert_eq!(scheme("data/users.parquet"), None);
        assert_eq!(scheme("c:/data"), None);
        assert_eq!(scheme("odd:name/x"), None);
        assert_eq!(scheme("./a://b"), None);
        assert_eq!(scheme("://x"), None);
    }

    #[test]
    fn local_keys_take_file_urls_and_refuse_other_schemes() {
        assert_eq!(local_path("store", "k"), Ok(None));
        assert_eq!(
            local_path("file:///srv/store", "k"),
            Ok(Some(PathBuf::from("/srv/store")))
        );
        let e = local_path("redis://127.0.0.1:6379/0", "[output] store").unwrap_err();
        assert!(
            e.contains("[output] store = 'redis://127.0.0.1:6379/0' is a redis:// URL"),
            "{e}"
        );
        let e = local_path("file://host/x", "k").unwrap_err();
        assert!(e.contains("not a local file URL"), "{e}");
    }

    #[test]
    fn input_urls_are_object_store_schemes_only() {
        for ok in [
            "s3://bucket/users/",
            "s3a://bucket/x.parquet",
            "gs://b/p/*.parquet",
            "az://container/p",
            "abfss://c@acct.dfs.core.windows.net/p",
            "https://example.org/x.parquet",
            "http://127.0.0.1:9/x.parquet",
        ] {
            assert!(matches!(input_url(ok, "k"), Ok(Some(_))), "{ok}");
        }
        assert_eq!(input_url("data/x.parquet", "k"), Ok(None));
        assert_eq!(input_url("file:///data/x.parquet", "k"), Ok(None));
        let e = input_url("ftp://host/x.parquet", "[input] path").unwrap_err();
        assert!(
            e.contains("has the scheme 'ftp://', which herd does not read"),
            "{e}"
        );
        let e = input_url("s3:///x.parquet", "[input] path").unwrap_err();
        assert!(e.contains("names no bucket"), "{e}");
    }
}
