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
    // A path that names an existing file or folder is taken as written, even
    // when its name has a glob character (`x[1].parquet`).
    let literal = std::fs::metadata(path);
    let glob = match literal {
        Ok(_) => None,
        Err(_) => Glob::new(&text).map_err(location_error)?,
    };
    let found: Vec<(PathBuf, Vec<(String, String)>)> = if let Some(glob) = glob {
        let base = glob.base();
        let full = |rel: &str| {
            if base.is_empty() {
                rel.to_string()
            } else {
                format!("{}/{rel}", base.trim_end_matches('/'))
            }
        };
        let wanted = Wanted {
            file: &|rel: &str| glob.matches(&full(rel)),
            folder: &|rel: &str| glob.may_match_below(&full(rel)),
        };
        let walked = walk(
            Path::new(if base.is_empty() { "." } else { base }),
            path,
            &wanted,
        )?;
        let matched: Vec<_> = walked
            .into_iter()
            .map(|rel| (PathBuf::from(full(&rel)), folder_keys(&rel)))
            .collect();
        if matched.is_empty() {
            return Err(Error::NoParts {
                path: path.to_path_buf(),
                message: "the glob matches no files",
            });
        }
        matched
    } else {
        let meta = literal.map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })?;
        if !meta.is_dir() {
            vec![(path.to_path_buf(), Vec::new())]
        } else {
            let wanted = Wanted {
                file: &is_data_file,
                folder: &|_| true,
            };
            let files: Vec<_> = walk(path, path, &wanted)?
                .into_iter()
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

/// Which entries below a walked folder matter, by `/`-separated path
/// relative to it: files that would be parts, folders that may hold some.
struct Wanted<'a> {
    file: &'a dyn Fn(&str) -> bool,
    folder: &'a dyn Fn(&str) -> bool,
}

/// The files below `dir` that `wanted` takes (symlinks followed), as
/// `/`-separated paths relative to it, searching only the folders it may
/// take files from and leaving out hidden names; `name` is the input, for
/// messages. Only entries that may matter are examined: a dangling symlink
/// elsewhere is no error, one that would have been a part is.
fn walk(dir: &Path, name: &Path, wanted: &Wanted) -> Result<Vec<String>> {
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
            let (as_file, as_folder) = ((wanted.file)(&child), (wanted.folder)(&child));
            if !as_file && !as_folder {
                continue;
            }
            let io = |source| Error::Io {
                path: path.clone(),
                source,
            };
            // The entry's own type (no stat where the folder listing tells
            // it); a symlink is followed.
            let kind = entry.file_type().map_err(io)?;
            let (is_dir, is_file) = if kind.is_symlink() {
                match std::fs::metadata(&path) {
                    Ok(meta) => (meta.is_dir(), meta.is_file()),
                    // A link to nothing is a part that cannot be read when
                    // its name is a part's; otherwise it is no folder to
                    // search either.
                    Err(source) if as_file => return Err(io(source)),
                    Err(_) => continue,
                }
            } else {
                (kind.is_dir(), kind.is_file())
            };
            if is_dir && as_folder {
                stack.push((path, child, depth + 1));
            } else if is_file && as_file {
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
    /// One matcher per segment of the pattern, up to the first `**`
    /// (`None` at that segment, and beyond it anything may match); empty
    /// when the pattern does not split into segments that way (a `{a,b/c}`
    /// group holding a `/`), so that every folder is searched.
    segments: Vec<Option<globset::GlobMatcher>>,
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
        let mut matchers = Vec::new();
        for segment in &segments {
            if segment.contains("**") {
                matchers.push(None);
                break;
            }
            match globset::GlobBuilder::new(segment)
                .literal_separator(true)
                .build()
            {
                Ok(g) => matchers.push(Some(g.compile_matcher())),
                Err(_) => {
                    matchers.clear();
                    break;
                }
            }
        }
        Ok(Some(Glob {
            base,
            matcher,
            segments: matchers,
        }))
    }

    /// Whether the folder `path` may hold a file the pattern matches: each
    /// of its segments matches the pattern's segment at its place, and the
    /// pattern has segments beyond it (or a `**` at or before it).
    pub(super) fn may_match_below(&self, path: &str) -> bool {
        if self.segments.is_empty() {
            return true;
        }
        let folder: Vec<&str> = path.split('/').collect();
        for (i, name) in folder.iter().enumerate() {
            match self.segments.get(i) {
                Some(Some(m)) => {
                    if !m.is_match(name) {
                        return false;
                    }
                }
                // A `**` here: anything below may match.
                Some(None) => return true,
                // The pattern ends above this folder.
                None => return false,
            }
        }
        // Every segment matched so far: a file or folder must follow.
        folder.len() < self.segments.len()
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

    /// The part names `find_local` returns for `pattern` below `dir`,
    /// relative to `dir`.
    fn found(dir: &Path, pattern: &str) -> Result<Vec<String>> {
        let parts = find_local(&dir.join(pattern))?;
        Ok(parts
            .iter()
            .map(|p| {
                let rel = p.name.strip_prefix(dir).unwrap();
                rel.to_string_lossy().into_owned()
            })
            .collect())
    }

    #[test]
    fn an_existing_path_is_taken_literally_before_glob_expansion() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("x[1].parquet"), b"a").unwrap();
        assert_eq!(found(dir.path(), "x[1].parquet").unwrap(), ["x[1].parquet"]);
        // A file the pattern matches as a glob is not read instead.
        std::fs::write(dir.path().join("x1.parquet"), b"b").unwrap();
        assert_eq!(found(dir.path(), "x[1].parquet").unwrap(), ["x[1].parquet"]);
        // A path that names nothing is still a glob.
        assert_eq!(found(dir.path(), "x[0-9].parquet").unwrap(), ["x1.parquet"]);
    }

    #[test]
    fn a_dangling_symlink_that_could_not_be_a_part_is_passed_over() {
        use std::os::unix::fs::symlink;
        let dir = tempfile::tempdir().unwrap();
        let g = dir.path().join("g");
        std::fs::create_dir_all(g.join("ok")).unwrap();
        std::fs::create_dir_all(g.join("bad")).unwrap();
        std::fs::write(g.join("ok/a.parquet"), b"a").unwrap();
        symlink("/nonexistent/zz", g.join("bad/zz.txt")).unwrap();
        symlink("/nonexistent/zz", g.join("bad/zz.parquet")).unwrap();
        symlink("/nonexistent/zz", g.join("ok/notes.txt")).unwrap();
        symlink("/nonexistent/zz", g.join("latest")).unwrap();
        assert_eq!(
            found(dir.path(), "g/o*/*.parquet").unwrap(),
            ["g/ok/a.parquet"]
        );
        assert_eq!(
            found(dir.path(), "g/**/a.parquet").unwrap(),
            ["g/ok/a.parquet"]
        );
        // A folder input: the stale `latest` link and a non-parquet link
        // are no parts; a parquet link to nothing is one that cannot be read.
        std::fs::remove_file(g.join("bad/zz.parquet")).unwrap();
        assert_eq!(found(dir.path(), "g").unwrap(), ["g/ok/a.parquet"]);
        symlink("/nonexistent/zz", g.join("ok/b.parquet")).unwrap();
        for pattern in ["g", "g/o*/*.parquet", "g/**/*.parquet"] {
            let e = found(dir.path(), pattern).unwrap_err().to_string();
            assert!(e.contains("ok/b.parquet"), "{pattern}: {e}");
        }
    }

    #[test]
    fn only_folders_that_may_hold_a_match_are_searched() {
        let g = Glob::new("g/o*/*.parquet").unwrap().unwrap();
        assert!(g.may_match_below("g"));
        assert!(g.may_match_below("g/ok"));
        assert!(!g.may_match_below("g/bad"));
        assert!(!g.may_match_below("g/ok/deeper"));
        assert!(!g.may_match_below("h"));
        let g = Glob::new("/srv/d/*/x=*/*.parquet").unwrap().unwrap();
        assert!(g.may_match_below("/srv/d/a/x=1"));
        assert!(!g.may_match_below("/srv/d/a/y=1"));
        // Below a `**` anything may match.
        let g = Glob::new("d/a*/**/p.parquet").unwrap().unwrap();
        assert!(g.may_match_below("d/ab/c/e/f"));
        assert!(!g.may_match_below("d/b"));
        // A group across segments: every folder is searched.
        let g = Glob::new("d/{a,b/c}/*.parquet").unwrap().unwrap();
        assert!(g.may_match_below("d/b/c"));
        assert!(g.matches("d/b/c/x.parquet"));
    }
}
