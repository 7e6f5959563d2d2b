//! Which files make up an input: one file, every `*.parquet` below a folder,
//! or the files a glob matches; here or (through [`super::remote`]) in
//! object storage.
//!
//! Parts are sorted by path, so global row numbers are the same on every
//! read and every machine. Files and folders whose name starts with `.` or
//! `_` (`_SUCCESS`, `.crc` files, `_temporary/`) are never parts. `key=value`
//! folders between the input's root and a file become columns of its rows.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::remote::{self, RemoteObject};
use super::{Error, Result};
use crate::config::{Location, Storage};

/// The most part files one input may have; each keeps its footer in memory.
pub const MAX_PARTS: usize = 100_000;
/// The deepest folder nesting searched below an input folder (also what
/// stops a symlink loop).
pub const MAX_DEPTH: usize = 64;

/// One part file, found but not opened.
pub(super) struct PartRef {
    /// The file's name in messages: its path, or its URL.
    pub name: PathBuf,
    pub source: PartSource,
    /// The `key=value` folders above the file, outermost first (values
    /// percent-decoded as Hive writes them).
    pub folders: Vec<(String, String)>,
    /// Size and modification time (or entity tag): what `--resume` compares.
    pub identity: String,
}

pub(super) enum PartSource {
    Local(PathBuf),
    Remote(Arc<RemoteObject>),
}

/// The parts of an input, sorted by path.
pub(super) fn find(location: &Location, storage: &Storage) -> Result<Vec<PartRef>> {
    match location {
        Location::Local(path) => find_local(&expand_home(path)),
        Location::Url(url) => remote::find_parts(url, storage),
    }
}

/// A local file's size and modification time, as one string.
pub(super) fn local_identity(file: &Path) -> Result<String> {
    let meta = std::fs::metadata(file).map_err(|source| Error::Io {
        path: file.to_path_buf(),
        source,
    })?;
    let modified = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    Ok(format!("{} {modified}", meta.len()))
}

/// `~/x` against `$HOME` (the config keeps `~` as written).
fn expand_home(path: &Path) -> PathBuf {
    match (path.strip_prefix("~"), std::env::var_os("HOME")) {
        (Ok(rest), Some(home)) => PathBuf::from(home).join(rest),
        _ => path.to_path_buf(),
    }
}

fn find_local(path: &Path) -> Result<Vec<PartRef>> {
    let text = path.to_string_lossy();
    let location_error = |message: String| Error::Location {
        path: path.to_path_buf(),
        message,
    };
    let found: Vec<(PathBuf, Vec<(String, String)>)> =
        if let Some(glob) = Glob::new(&text).map_err(location_error)? {
            let base = glob.base();
            let walked = walk(Path::new(if base.is_empty() { "." } else { base }), path)?;
            let matched: Vec<_> = walked
                .into_iter()
                .filter_map(|rel| {
                    let full = if base.is_empty() {
                        rel.clone()
                    } else {
                        format!("{}/{rel}", base.trim_end_matches('/'))
                    };
                    glob.matches(&full)
                        .then(|| (PathBuf::from(full), folder_keys(&rel)))
                })
                .collect();
            if matched.is_empty() {
                return Err(Error::NoParts {
                    path: path.to_path_buf(),
                    message: "the glob matches no files",
                });
            }
            matched
        } else {
            let meta = std::fs::metadata(path).map_err(|source| Error::Io {
                path: path.to_path_buf(),
                source,
            })?;
            if !meta.is_dir() {
                vec![(path.to_path_buf(), Vec::new())]
            } else {
                let files: Vec<_> = walk(path, path)?
                    .into_iter()
                    .filter(|rel| is_data_file(rel))
                    .map(|rel| (path.join(&rel), folder_keys(&rel)))
                    .collect();
                if files.is_empty() {
                    return Err(Error::NoParts {
                        path: path.to_path_buf(),
                        message: "no *.parquet file is in this folder or below it",
                    });
                }
                files
            }
        };
    if found.len() > MAX_PARTS {
        return Err(Error::TooManyParts {
            path: path.to_path_buf(),
            found: found.len(),
        });
    }
    let mut parts = Vec::with_capacity(found.len());
    for (file, folders) in found {
        parts.push(PartRef {
            identity: local_identity(&file)?,
            source: PartSource::Local(file.clone()),
            name: file,
            folders,
        });
    }
    parts.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(parts)
}

/// Every regular file below `dir` (symlinks followed), as `/`-separated
/// paths relative to it, leaving out hidden names; `name` is the input, for
/// messages.
fn walk(dir: &Path, name: &Path) -> Result<Vec<String>> {
    let mut out = Vec::new();
    let mut stack = vec![(dir.to_path_buf(), String::new(), 0usize)];
    while let Some((folder, rel, depth)) = stack.pop() {
        if depth > MAX_DEPTH {
            return Err(Error::Location {
                path: folder,
                message: format!(
                    "folders nest deeper than {MAX_DEPTH} levels below {} (a symlink loop?)",
                    name.display()
                ),
            });
        }
        let entries = std::fs::read_dir(&folder).map_err(|source| Error::Io {
            path: folder.clone(),
            source,
        })?;
        for entry in entries {
            let entry = entry.map_err(|source| Error::Io {
                path: folder.clone(),
                source,
            })?;
            let file_name = entry.file_name().to_string_lossy().into_owned();
            if is_hidden(&file_name) {
                continue;
            }
            let path = entry.path();
            let child = if rel.is_empty() {
                file_name
            } else {
                format!("{rel}/{file_name}")
            };
            // Follows symlinks, unlike DirEntry::file_type.
            let meta = std::fs::metadata(&path).map_err(|source| Error::Io {
                path: path.clone(),
                source,
            })?;
            if meta.is_dir() {
                stack.push((path, child, depth + 1));
            } else if meta.is_file() {
                out.push(child);
                if out.len() > MAX_PARTS * 4 {
                    return Err(Error::TooManyParts {
                        path: name.to_path_buf(),
                        found: out.len(),
                    });
                }
            }
        }
    }
    out.sort();
    Ok(out)
}

fn is_hidden(segment: &str) -> bool {
    segment.starts_with('.') || segment.starts_with('_')
}

/// A data file below an input folder: `*.parquet`, no hidden segment.
pub(super) fn is_data_file(relative: &str) -> bool {
    let mut segments = relative.split('/').filter(|s| !s.is_empty()).peekable();
    let mut last = None;
    while let Some(s) = segments.next() {
        if is_hidden(s) {
            return false;
        }
        if segments.peek().is_none() {
            last = Some(s);
        }
    }
    last.is_some_and(|s| {
        s.len() > ".parquet".len()
            && s[s.len() - ".parquet".len()..].eq_ignore_ascii_case(".parquet")
    })
}

/// The `key=value` folders of a relative file path, outermost first.
pub(super) fn folder_keys(relative: &str) -> Vec<(String, String)> {
    let segments: Vec<&str> = relative.split('/').filter(|s| !s.is_empty()).collect();
    let folders = &segments[..segments.len().saturating_sub(1)];
    folders
        .iter()
        .filter_map(|s| s.split_once('='))
        .filter(|(k, _)| !k.is_empty())
        .map(|(k, v)| (percent_decode(k), percent_decode(v)))
        .collect()
}

/// `%XX` escapes (as Hive writes special characters in folder names)
/// decoded; anything else kept.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2]))
        {
            out.push((h * 16 + l) as u8);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A glob over `/`-separated paths: `*` and `?` stay within one segment,
/// `**` crosses segments, `[abc]` and `{a,b}` as usual.
pub(super) struct Glob {
    /// The segments before the first one with a glob character.
    base: String,
    matcher: globset::GlobMatcher,
}

impl Glob {
    /// `None` when `pattern` has no glob character (`*`, `?`, `[`, `{`).
    pub(super) fn new(pattern: &str) -> std::result::Result<Option<Glob>, String> {
        let special = |s: &str| s.contains(['*', '?', '[', '{']);
        if !special(pattern) {
            return Ok(None);
        }
        let segments: Vec<&str> = pattern.split('/').collect();
        let literal = segments.iter().take_while(|s| !special(s)).count();
        let mut base = segments[..literal].join("/");
        if base.is_empty() && pattern.starts_with('/') {
            base = "/".to_string();
        }
        let matcher = globset::GlobBuilder::new(pattern)
            .literal_separator(true)
            .build()
            .map_err(|e| format!("not a valid glob: {e}"))?
            .compile_matcher();
        Ok(Some(Glob { base, matcher }))
    }

    pub(super) fn base(&self) -> &str {
        &self.base
    }

    pub(super) fn matches(&self, path: &str) -> bool {
        self.matcher.is_match(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_files_are_parquet_files_outside_hidden_folders() {
        assert!(is_data_file("part-0.parquet"));
        assert!(is_data_file("a=1/b=x/part-0.PARQUET"));
        assert!(!is_data_file("_SUCCESS"));
        assert!(!is_data_file(".part-0.parquet.crc"));
        assert!(!is_data_file("_temporary/0/part-0.parquet"));
        assert!(!is_data_file("a=1/.hidden.parquet"));
        assert!(!is_data_file("notes.txt"));
        assert!(!is_data_file(".parquet"));
    }

    #[test]
    fn folder_keys_are_key_value_folders_decoded() {
        assert_eq!(
            folder_keys("region=eu/day=2024-01-02/part-0.parquet"),
            [
                ("region".to_string(), "eu".to_string()),
                ("day".to_string(), "2024-01-02".to_string())
            ]
        );
        assert_eq!(
            folder_keys("2024/t=a%3Ab/x.parquet"),
            [("t".to_string(), "a:b".to_string())]
        );
        assert!(folder_keys("x=1.parquet").is_empty());
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz%41"), "%zzA");
    }

    #[test]
    fn globs_keep_a_literal_base_and_stay_within_segments() {
        let g = Glob::new("data/users/*.parquet").unwrap().unwrap();
        assert_eq!(g.base(), "data/users");
        assert!(g.matches("data/users/a.parquet"));
        assert!(!g.matches("data/users/x=1/a.parquet"));
        let g = Glob::new("/srv/d/**/part-?.parquet").unwrap().unwrap();
        assert_eq!(g.base(), "/srv/d");
        assert!(g.matches("/srv/d/x=1/y=2/part-3.parquet"));
        assert_eq!(Glob::new("/*.parquet").unwrap().unwrap().base(), "/");
        assert!(Glob::new("data/users.parquet").unwrap().is_none());
        assert!(Glob::new("data/[z-a].parquet").is_err());
    }
}
