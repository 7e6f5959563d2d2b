//! The RESP request parser: bounded and resumable.
//!
//! It is ours rather than a crate's because its limits must act before
//! bytes are buffered: an argument's declared length is refused when its
//! header arrives ([`MAX_ARG_BYTES`]), a command's total when it passes
//! [`MAX_COMMAND_BYTES`], an inline line at [`MAX_INLINE_BYTES`]; and it
//! resumes where it stopped, so a command trickling in byte by byte costs
//! no re-parsing.

use std::ops::Range;

use super::super::{MAX_ARG_BYTES, MAX_COMMAND_BYTES, MAX_INLINE_BYTES};

/// Arguments of one command at most: as many as fit [`MAX_COMMAND_BYTES`]
/// (an empty argument takes 6 bytes, `$0\r\n\r\n`). A command of more
/// keys than [`MAX_KEYS`](super::super::MAX_KEYS) is parsed whole and refused by its command, so
/// the connection stays usable.
pub const MAX_ARGS: usize = MAX_COMMAND_BYTES / 6;
/// Argument ranges reserved when a multibulk header arrives; more are
/// added as arguments actually arrive.
const RESERVE_ARGS: usize = 64;
/// The most bytes a multibulk or bulk header line may take (`*43690\r\n`).
const MAX_HEADER_LINE: usize = 32;

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
    /// The arguments, as ranges of the command's bytes, or of `unquoted`
    /// for an inline command: read them with [`Parser::arg`].
    pub args: Vec<Range<usize>>,
    /// An inline command's arguments with their quotes and escapes undone.
    unquoted: Vec<u8>,
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

    /// Argument `i` of the command just returned, whose bytes are `cmd`.
    pub fn arg<'a>(&'a self, cmd: &'a [u8], i: usize) -> &'a [u8] {
        let r = self.args[i].clone();
        match self.inline {
            true => &self.unquoted[r],
            false => &cmd[r],
        }
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
                    _ => {
                        return Step::Bad(format!(
                            "Protocol error: invalid multibulk length (a command has at most {MAX_ARGS} arguments)"
                        ));
                    }
                };
                self.pos = line + 2;
                if n <= 0 {
                    return Step::Command(self.pos);
                }
                self.remaining = Some(n as usize);
                self.args.reserve((n as usize).min(RESERVE_ARGS));
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
        let line = &buf[..line_end];
        self.unquoted.clear();
        let mut i = 0;
        loop {
            while i < line.len() && line[i].is_ascii_whitespace() {
                i += 1;
            }
            if i == line.len() {
                break;
            }
            if self.args.len() == MAX_ARGS {
                return Step::Bad("Protocol error: too many arguments".into());
            }
            let start = self.unquoted.len();
            if unquote(line, &mut i, &mut self.unquoted).is_err() {
                return Step::Bad("Protocol error: unbalanced quotes in request".into());
            }
            self.args.push(start..self.unquoted.len());
        }
        self.pos = nl + 1;
        Step::Command(self.pos)
    }
}

/// One argument of an inline command, from `line[*i]` (not a space) to the
/// space or end after it, into `out`, as Redis splits inline commands: a
/// double-quoted part takes the escapes `\n \r \t \b \a \xHH` and a
/// backslash before any other byte stands for that byte; a single-quoted part
/// only `\'`. A quote may begin anywhere in the argument; a closing quote
/// must end it (a space or the line's end after it); an unclosed quote is
/// an error.
fn unquote(line: &[u8], i: &mut usize, out: &mut Vec<u8>) -> Result<(), ()> {
    let hex = |b: u8| (b as char).to_digit(16);
    let mut quote = None;
    while *i < line.len() {
        let (c, next) = (line[*i], line.get(*i + 1).copied());
        match quote {
            None if c.is_ascii_whitespace() => return Ok(()),
            None if c == b'"' || c == b'\'' => quote = Some(c),
            None => out.push(c),
            Some(q) if c == q => {
                if next.is_some_and(|n| !n.is_ascii_whitespace()) {
                    return Err(());
                }
                *i += 1;
                return Ok(());
            }
            Some(b'"') if c == b'\\' && next.is_some() => {
                let escaped = match next {
                    Some(b'x') => line
                        .get(*i + 2..*i + 4)
                        .and_then(|h| Some(hex(h[0])? * 16 + hex(h[1])?)),
                    _ => None,
                };
                if let Some(byte) = escaped {
                    out.push(byte as u8);
                    *i += 3;
                } else {
                    out.push(match next {
                        Some(b'n') => b'\n',
                        Some(b'r') => b'\r',
                        Some(b't') => b'\t',
                        Some(b'b') => 0x08,
                        Some(b'a') => 0x07,
                        Some(other) => other,
                        None => unreachable!("checked above"),
                    });
                    *i += 1;
                }
            }
            Some(_) if c == b'\\' && next == Some(b'\'') => {
                out.push(b'\'');
                *i += 1;
            }
            Some(_) => out.push(c),
        }
        *i += 1;
    }
    match quote {
        Some(_) => Err(()),
        None => Ok(()),
    }
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
                    out.push((0..p.args.len()).map(|i| p.arg(cmd, i).to_vec()).collect());
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
    fn inline_arguments_are_unquoted_as_redis_splits_them() {
        let (cmds, rest) = parse_all(
            b"GET \"user 1\"\r\nSET 'it' 's' \"a\\tb\\x41\\\"\\q\" ab\"c d\"\nGET \"\" ''\r\n",
        );
        assert_eq!(rest, Step::More);
        assert_eq!(
            cmds,
            vec![
                vec![b"GET".to_vec(), b"user 1".to_vec()],
                vec![
                    b"SET".to_vec(),
                    b"it".to_vec(),
                    b"s".to_vec(),
                    b"a\tbA\"q".to_vec(),
                    b"abc d".to_vec()
                ],
                vec![b"GET".to_vec(), b"".to_vec(), b"".to_vec()],
            ]
        );
        // A closing quote with more after it ('it''s' too), an unclosed
        // quote, and a single-quoted escape:
        for (line, ok) in [
            (&b"GET 'it''s'\n"[..], false),
            (b"GET \"open\n", false),
            (b"GET \"a\"b\n", false),
            (b"GET 'it\\'s'\n", true),
        ] {
            let (cmds, rest) = parse_all(line);
            match ok {
                true => assert_eq!(cmds, vec![vec![b"GET".to_vec(), b"it's".to_vec()]]),
                false => assert!(
                    matches!(&rest, Step::Bad(m) if m.contains("unbalanced quotes")),
                    "{:?}: {rest:?}",
                    String::from_utf8_lossy(line)
                ),
            }
        }
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
