//! POSIX shell quoting for the commands herd runs on remote hosts.
//!
//! An SSH exec request is a single string that the remote user's shell
//! parses, so every value herd puts in one (paths, hashes, environment
//! settings) goes through [`quote`]: the result is one shell word whose value
//! is exactly the input, whatever characters it holds.

/// `s` as one single-quoted shell word: `it's` becomes `'it'\''s'`.
///
/// Inside single quotes every character but `'` is literal, so each `'` ends
/// the quoted run, adds an escaped quote and reopens it. NUL bytes cannot be
/// part of a command line at all; callers pass paths and hashes, which hold
/// none (see [`has_nul`]).
pub fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('\'');
    for c in s.chars() {
        if c == '\'' {
            out.push_str("'\\''");
        } else {
            out.push(c);
        }
    }
    out.push('\'');
    out
}

/// Whether `s` holds a NUL byte, which no shell word can carry.
pub fn has_nul(s: &str) -> bool {
    s.contains('\0')
}

/// Whether `name` may be an environment variable name in a remote command
/// (`[A-Za-z_][A-Za-z0-9_]*`).
pub fn is_env_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// What `sh` makes of `word`: the arguments it would pass to a program,
    /// one per line of `printf '%s\n'`.
    fn sh_words(word: &str) -> Vec<String> {
        let out = std::process::Command::new("/bin/sh")
            .arg("-c")
            .arg(format!("printf '%s\\n' {word}"))
            .output()
            .expect("run /bin/sh");
        assert!(out.status.success(), "sh refused {word}: {out:?}");
        let text = String::from_utf8(out.stdout).expect("utf-8");
        text.strip_suffix('\n')
            .unwrap_or(&text)
            .split('\n')
            .map(str::to_string)
            .collect()
    }

    #[test]
    fn a_quoted_word_reaches_the_program_unchanged() {
        for s in [
            "plain",
            "it's",
            "''",
            "a b  c",
            "$HOME",
            "`id`",
            "$(rm -rf /)",
            "; echo pwned",
            "back\\slash",
            "*",
            "~/x",
            "\"dq\"",
            "tab\there",
            "",
            "ünïcødé",
        ] {
            assert_eq!(sh_words(&quote(s)), vec![s.to_string()], "input {s:?}");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        #[test]
        fn any_string_without_newline_or_nul_survives_the_shell(s in "[^\n\0]{0,40}") {
            prop_assert_eq!(sh_words(&quote(&s)), vec![s.clone()]);
        }
    }

    #[test]
    fn env_names_are_checked() {
        assert!(is_env_name("HERD_TEST_WORKER_SLOWDOWN"));
        assert!(is_env_name("_x1"));
        assert!(!is_env_name("1x"));
        assert!(!is_env_name("A=B"));
        assert!(!is_env_name(""));
        assert!(!is_env_name("A B"));
        assert!(has_nul("a\0b") && !has_nul("ab"));
    }
}
