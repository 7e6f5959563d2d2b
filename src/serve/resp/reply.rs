//! RESP reply writers: RESP2, or RESP3 after `HELLO 3`.

/// RESP reply writers.
pub(super) struct Reply<'a> {
    pub out: &'a mut Vec<u8>,
    pub resp3: bool,
}

impl Reply<'_> {
    pub fn simple(&mut self, s: &str) {
        self.out.push(b'+');
        self.out.extend_from_slice(s.as_bytes());
        self.out.extend_from_slice(b"\r\n");
    }

    pub fn error(&mut self, s: &str) {
        self.out.push(b'-');
        // An error line must not break the framing.
        for b in s.bytes() {
            self.out
                .push(if b == b'\r' || b == b'\n' { b' ' } else { b });
        }
        self.out.extend_from_slice(b"\r\n");
    }

    pub fn int(&mut self, n: i64) {
        self.out.push(b':');
        self.out
            .extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
        self.out.extend_from_slice(b"\r\n");
    }

    pub fn header(&mut self, marker: u8, n: usize) {
        self.out.push(marker);
        self.out
            .extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
        self.out.extend_from_slice(b"\r\n");
    }

    pub fn bulk(&mut self, b: &[u8]) {
        self.header(b'$', b.len());
        self.out.extend_from_slice(b);
        self.out.extend_from_slice(b"\r\n");
    }

    /// A bulk string written in place by `write` (which appends it to the
    /// buffer it is given): after a length line of the usual width for a
    /// prediction (4 digits), moved once when the length has another width.
    pub fn bulk_with(&mut self, write: impl FnOnce(&mut Vec<u8>)) {
        const GUESS: &[u8] = b"$0000\r\n";
        let start = self.out.len();
        self.out.extend_from_slice(GUESS);
        write(self.out);
        let len = self.out.len() - start - GUESS.len();
        let mut digits = itoa::Buffer::new();
        let digits = digits.format(len).as_bytes();
        let (at, end) = (start + 1, start + GUESS.len() - 2);
        if digits.len() == end - at {
            self.out[at..end].copy_from_slice(digits);
        } else {
            self.out.splice(at..end, digits.iter().copied());
        }
        self.out.extend_from_slice(b"\r\n");
    }

    pub fn nil(&mut self) {
        self.out
            .extend_from_slice(if self.resp3 { b"_\r\n" } else { b"$-1\r\n" });
    }

    pub fn array(&mut self, n: usize) {
        self.header(b'*', n);
    }

    /// A map of `n` pairs (an array of 2n in RESP2).
    pub fn map(&mut self, n: usize) {
        if self.resp3 {
            self.header(b'%', n);
        } else {
            self.header(b'*', 2 * n);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bulk_written_in_place_has_its_own_length_whatever_its_width() {
        for len in [0, 7, 999, 1000, 3320, 9999, 10_000, 123_456] {
            let body = vec![b'x'; len];
            let mut out = b"+OK\r\n".to_vec();
            Reply {
                out: &mut out,
                resp3: false,
            }
            .bulk_with(|o| o.extend_from_slice(&body));
            let mut want = b"+OK\r\n".to_vec();
            Reply {
                out: &mut want,
                resp3: false,
            }
            .bulk(&body);
            assert_eq!(out, want, "{len} bytes");
        }
    }
}
