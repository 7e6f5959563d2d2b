//! TOML and serde errors rewritten in the words of herd's files: which table,
//! which key, the value as written and what was expected, at the line and
//! column of the offending text.

use super::Error;
use super::raw;
use super::source::Source;

impl Source<'_> {
    /// The header (`[model]`, `[[host]]`) of the table that holds `offset`,
    /// or `None` at the top level.
    fn table_at(&self, offset: usize) -> Option<&str> {
        let offset = self.clamp(offset);
        let end = self.text[offset..]
            .find('\n')
            .map_or(self.text.len(), |i| offset + i);
        self.text[..end].lines().rev().find_map(|line| {
            let line = line.trim_start();
            if !line.starts_with('[') {
                return None;
            }
            let close = if line.starts_with("[[") { "]]" } else { "]" };
            line.find(close).map(|i| &line[..i + close.len()])
        })
    }

    /// The header written on the line of `offset`, if that line is one.
    fn header_on_line_of(&self, offset: usize) -> Option<&str> {
        let offset = self.clamp(offset);
        let start = self.text[..offset].rfind('\n').map_or(0, |i| i + 1);
        let line = self.text[start..].lines().next()?.trim_start();
        line.starts_with('[').then_some(line)
    }

    /// The key written before the value at `offset` on its line (`top_k` in
    /// `top_k = 'abc'`), if any.
    fn key_before(&self, offset: usize) -> Option<&str> {
        let offset = self.clamp(offset);
        let line_start = self.text[..offset].rfind('\n').map_or(0, |i| i + 1);
        let prefix = &self.text[line_start..offset];
        let eq = prefix.find('=')?;
        let key = prefix[..eq].trim();
        let key = key.rsplit(['{', ',']).next().unwrap_or(key).trim();
        (!key.is_empty()).then_some(key)
    }

    /// Rewrites a TOML or serde error in the words of this file format.
    pub(crate) fn toml_error(&self, e: &toml::de::Error) -> Error {
        let span = e.span().unwrap_or(0..0);
        let message = e.message();
        let table = self.table_at(span.start);
        let place = table.map_or(String::new(), |t| format!("{t} "));
        let ticked = quoted_names(message);
        let text = self.text.get(span.clone()).unwrap_or("");
        let rewritten = if message.starts_with("unknown field `") {
            let name = ticked.first().cloned().unwrap_or_default();
            let allowed: Vec<String> = ticked
                .iter()
                .skip(1)
                .filter(|k| !raw::REFUSED_KEYS.contains(&k.as_str()))
                .map(|k| format!("'{k}'"))
                .collect();
            match self.header_on_line_of(span.start) {
                // An unknown table: `[extra]` or `[model.extra]`.
                Some(header) => {
                    let header = header.split(']').next().unwrap_or(header);
                    let header = header.trim_start_matches('[');
                    let parent = header
                        .rsplit_once('.')
                        .map_or(String::new(), |(parent, _)| format!(" in [{parent}]"));
                    format!(
                        "unknown table [{header}]; expected one of the keys{parent}: {}",
                        allowed.join(", ")
                    )
                }
                None => {
                    let where_ =
                        table.map_or("at the top level".to_string(), |t| format!("in {t}"));
                    format!(
                        "unknown key '{name}' {where_}; expected one of {}",
                        allowed.join(", ")
                    )
                }
            }
        } else if message.starts_with("missing field `") {
            let name = ticked.first().cloned().unwrap_or_default();
            if text.starts_with('[') {
                format!("{text} is missing the required key '{name}'")
            } else if let Some(key) = self.key_before(span.start).filter(|_| !span.is_empty()) {
                format!("{place}{key} is missing the required key '{name}'")
            } else {
                format!("the required table [{name}] is missing")
            }
        } else if let Some(rest) = message.strip_prefix("invalid type: ") {
            let (found, expected) = rest.split_once(", expected ").unwrap_or((rest, "?"));
            let key = self.key_before(span.start).unwrap_or(text);
            let (found_kind, found_value) = describe_found(found);
            if let Some(header) = self.header_on_line_of(span.start) {
                let header = header.split(']').next().unwrap_or(header);
                let name = header.trim_start_matches('[');
                let hint = if expected == "a sequence" {
                    format!(", written [[{name}]]")
                } else {
                    String::new()
                };
                return self.error(
                    span,
                    format!(
                        "[{name}] is {found_kind}; expected {}{hint}",
                        describe_expected(expected)
                    ),
                );
            }
            let value = found_value.map_or(String::new(), |v| format!(" = '{v}'"));
            format!(
                "{place}{key}{value} is {found_kind}; expected {}",
                describe_expected(expected)
            )
        } else if message.starts_with("duplicate key") {
            match self.header_on_line_of(span.start) {
                Some(_) => format!("table [{text}] is defined twice; expected each table once"),
                None => format!("{place}'{text}' is defined twice; expected each key once"),
            }
        } else {
            format!("invalid TOML: {}", message.replace('`', "'"))
        };
        self.error(span, rewritten)
    }
}

/// The names serde puts in backticks, in order.
fn quoted_names(message: &str) -> Vec<String> {
    message
        .split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect()
}

/// serde's description of a value found ("string \"abc\"", "integer `3`")
/// as (a kind in words, the value).
fn describe_found(found: &str) -> (String, Option<String>) {
    let (kind, value) = match found.split_once(' ') {
        Some((kind, value)) => (kind, Some(value.trim_matches(['`', '"']).to_string())),
        None => (found, None),
    };
    let kind = match kind {
        "string" => "a string",
        "integer" => "an integer",
        "floating" => "a number with a fraction",
        "boolean" => "a boolean",
        "sequence" => "a list",
        "map" => "a table",
        other => other,
    };
    let value = if kind == "a number with a fraction" {
        value.map(|v| v.trim_start_matches("point ").trim_matches('`').to_string())
    } else {
        value
    };
    (kind.to_string(), value)
}

/// serde's name of an expected type, in the words of a TOML file.
fn describe_expected(expected: &str) -> String {
    match expected {
        "i8" | "i16" | "i32" | "i64" | "u8" | "u16" | "u32" | "u64" | "usize" => {
            "an integer".to_string()
        }
        "f32" | "f64" => "a number".to_string(),
        "a sequence" => "a list".to_string(),
        e if e.starts_with("struct ") || e == "a map" => "a table".to_string(),
        "a string" | "a boolean" => expected.to_string(),
        other => other.replace('`', "'"),
    }
}
