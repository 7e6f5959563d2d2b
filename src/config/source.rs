//! The text being parsed and its path: byte spans turned into errors located
//! at a file, line and column, and the checks every kind of value shares
//! (paths, names, columns, choices, ranges). The job and fleet stages and the
//! model families resolve their values through it, so every message reads
//! the same way: the key, the quoted value, what was expected.
//!
//! Pure: no file system, no clock, no environment.

use std::ops::Range;
use std::path::{Path, PathBuf};

use toml::Spanned;

use super::{Error, Result};

/// Longest job or host name, in characters.
pub const MAX_NAME_LEN: usize = 128;

/// The text being parsed and its path.
pub struct Source<'a> {
    pub text: &'a str,
    pub file: &'a Path,
}

impl Source<'_> {
    pub fn error(&self, span: Range<usize>, message: impl Into<String>) -> Error {
        let (line, column) = self.position(span.start);
        Error {
            file: self.file.to_path_buf(),
            line: Some(line),
            column: Some(column),
            message: message.into(),
        }
    }

    /// `offset` moved into the text and onto a character boundary.
    pub fn clamp(&self, offset: usize) -> usize {
        let mut offset = offset.min(self.text.len());
        while !self.text.is_char_boundary(offset) {
            offset -= 1;
        }
        offset
    }

    /// 1-based line and column (in characters) of a byte offset.
    pub fn position(&self, offset: usize) -> (usize, usize) {
        let offset = self.clamp(offset);
        let before = &self.text[..offset];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        (line, before[line_start..].chars().count() + 1)
    }

    pub fn line_of(&self, span: &Range<usize>) -> usize {
        self.position(span.start).0
    }

    /// A path value: joined to the folder of this file unless absolute or
    /// starting with `~/` (kept for the caller to expand).
    pub fn path(&self, value: &Spanned<String>, label: &str) -> Result<PathBuf> {
        let s = value.get_ref();
        if s.is_empty() {
            return Err(self.error(value.span(), format!("{label} is empty; expected a path")));
        }
        if s == "~" || s.starts_with("~/") {
            return Ok(PathBuf::from(s));
        }
        Ok(beside(self.file, s))
    }

    /// A job or host name: letters, digits, `-`, `_` and `.`.
    pub fn name(&self, value: &Spanned<String>, label: &str) -> Result<String> {
        const EXPECTED: &str = "expected letters, digits, '-', '_' and '.' only";
        let s = value.get_ref();
        if s.is_empty() {
            return Err(self.error(value.span(), format!("{label} is empty; {EXPECTED}")));
        }
        if let Some(c) = s
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
        {
            return Err(self.error(
                value.span(),
                format!("{label} = '{s}' contains '{c}'; {EXPECTED}"),
            ));
        }
        if s.chars().count() > MAX_NAME_LEN {
            return Err(self.error(
                value.span(),
                format!("{label} = '{s}' is too long; expected at most {MAX_NAME_LEN} characters"),
            ));
        }
        Ok(s.clone())
    }

    /// A column name: any non-empty string.
    pub fn column(&self, value: &Spanned<String>, label: &str) -> Result<String> {
        if value.get_ref().is_empty() {
            return Err(self.error(
                value.span(),
                format!("{label} is empty; expected a column name of the input file"),
            ));
        }
        Ok(value.get_ref().clone())
    }

    pub fn choice<T: Copy>(
        &self,
        value: &Spanned<String>,
        label: &str,
        what: &str,
        options: &[(&str, T)],
    ) -> Result<T> {
        let s = value.get_ref();
        options
            .iter()
            .find(|(name, _)| name == s)
            .map(|&(_, v)| v)
            .ok_or_else(|| {
                let names = quoted(options.iter().map(|(n, _)| *n));
                self.error(
                    value.span(),
                    format!("{label} = '{s}' is not {what}; expected {names}"),
                )
            })
    }

    pub fn int(
        &self,
        value: &Spanned<i64>,
        label: &str,
        min: i64,
        max: Option<i64>,
    ) -> Result<i64> {
        let v = *value.get_ref();
        if v >= min && max.is_none_or(|max| v <= max) {
            return Ok(v);
        }
        let expected = match max {
            Some(max) => format!("an integer from {min} to {max}"),
            None => format!("an integer of at least {min}"),
        };
        Err(self.error(
            value.span(),
            format!("{label} = '{v}' is out of range; expected {expected}"),
        ))
    }

    pub fn int_or(
        &self,
        value: &Option<Spanned<i64>>,
        default: i64,
        label: &str,
        min: i64,
        max: Option<i64>,
    ) -> Result<i64> {
        value
            .as_ref()
            .map_or(Ok(default), |v| self.int(v, label, min, max))
    }

    pub fn number(
        &self,
        value: &Spanned<f64>,
        label: &str,
        min: f64,
        max: Option<f64>,
    ) -> Result<f64> {
        let v = *value.get_ref();
        if v.is_finite() && v >= min && max.is_none_or(|max| v <= max) {
            return Ok(v);
        }
        let expected = match max {
            Some(max) => format!("a number from {min} to {max}"),
            None => format!("a number of at least {min}"),
        };
        Err(self.error(
            value.span(),
            format!("{label} = '{v}' is out of range; expected {expected}"),
        ))
    }
}

/// `names` quoted: `'a'`, `'a' or 'b'`, `'a', 'b' or 'c'`.
pub(crate) fn quoted<'a>(names: impl IntoIterator<Item = &'a str>) -> String {
    let names: Vec<String> = names.into_iter().map(|n| format!("'{n}'")).collect();
    match names.as_slice() {
        [] => String::new(),
        [one] => one.clone(),
        [init @ .., last] => format!("{} or {last}", init.join(", ")),
    }
}

pub(crate) fn value_kind(v: &toml::Value) -> &'static str {
    match v {
        toml::Value::String(_) => "a string",
        toml::Value::Integer(_) => "an integer",
        toml::Value::Float(_) => "a number with a fraction",
        toml::Value::Boolean(_) => "a boolean",
        toml::Value::Datetime(_) => "a date",
        toml::Value::Array(_) => "a list",
        toml::Value::Table(_) => "a table",
    }
}

/// `rel` joined to the folder of `file`, with `.` and `dir/..` removed
/// lexically (`jobs/../store` reads as `store` in every message).
pub(crate) fn beside(file: &Path, rel: &str) -> PathBuf {
    use std::path::Component;
    let joined = file.parent().unwrap_or(Path::new("")).join(rel);
    let mut out: Vec<Component> = Vec::new();
    for c in joined.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir if matches!(out.last(), Some(Component::Normal(_))) => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    if out.is_empty() {
        return PathBuf::from(".");
    }
    out.iter().collect()
}
