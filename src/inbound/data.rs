//! The message content reader for DATA and BDAT: finds the end of DATA, removes dot-stuffing,
//! normalizes line endings and enforces the size limit. Pure: bytes in, bytes out.
//!
//! Only `<CRLF>.<CRLF>` ends DATA. A bare LF or a bare CR is never a line ending on the wire
//! and can never end a message or start another one (SMTP smuggling, CVE-2023-51764/5/6).
//! mx2 normalizes such content instead of rejecting it (as Postfix 3.9 does with
//! `smtpd_forbid_bare_newline = normalize`): each bare LF or bare CR becomes CRLF, and a dot
//! that follows one is ordinary text. The stored content therefore has CRLF line endings only,
//! and since the client dot-stuffs every line starting with `.`, what reaches the primary can
//! never be read as two messages.
//!
//! The decoded content collects in memory until the caller takes it ([`Decoder::take`]) to
//! spool it, so a large message is never held whole; the first [`START_KEPT`] bytes stay
//! at hand for the checks on the header section (mail loops).

/// How the content arrives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// DATA: dot-stuffed, ends at `<CRLF>.<CRLF>`.
    Dot,
    /// BDAT: counted chunks, no dot-stuffing.
    Chunks,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// After a real CRLF (or at the very start): a dot here is special in DATA.
    LineStart,
    /// After a bare LF or bare CR turned into CRLF: a dot here is ordinary text.
    LineStartBare,
    Mid,
    /// After a CR; the next byte decides whether it was a bare CR.
    Cr,
    /// LineStart followed by `.`.
    Dot,
    /// LineStart, `.`, CR.
    DotCr,
    /// The end of data was seen.
    Done,
}

/// How much of the content's start the decoder keeps once the rest has been taken.
pub const START_KEPT: usize = 64 << 10;

/// Decodes message content into its stored form.
#[derive(Debug)]
pub struct Decoder {
    mode: Mode,
    state: State,
    out: Vec<u8>,
    /// Bytes handed out by [`Decoder::take`] so far.
    taken: u64,
    /// The content's first bytes, kept once some of it was taken.
    start: Vec<u8>,
    limit: u64,
    total: u64,
    /// Bare CR or LF line endings that were normalized.
    pub bare_line_endings: u64,
}

impl Decoder {
    pub fn new(mode: Mode, limit: u64) -> Self {
        Self {
            mode,
            state: State::LineStart,
            out: Vec::new(),
            taken: 0,
            start: Vec::new(),
            limit,
            total: 0,
            bare_line_endings: 0,
        }
    }

    /// True once the content has grown past the limit (the excess is discarded).
    pub fn over_limit(&self) -> bool {
        self.total > self.limit
    }

    /// Bytes of content seen so far, counting what was discarded.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// Decoded bytes waiting to be taken.
    pub fn pending(&self) -> usize {
        self.out.len()
    }

    /// Bytes handed out by [`Decoder::take`] so far (0 for content held whole).
    pub fn taken(&self) -> u64 {
        self.taken
    }

    /// Hands out the content decoded so far (to be spooled); what comes later follows it.
    pub fn take(&mut self) -> Vec<u8> {
        if self.start.len() < START_KEPT {
            let want = (START_KEPT - self.start.len()).min(self.out.len());
            self.start.extend_from_slice(&self.out[..want]);
        }
        self.taken += self.out.len() as u64;
        std::mem::take(&mut self.out)
    }

    /// The content's start: all of it while none was taken, else its first
    /// [`START_KEPT`] bytes.
    pub fn start(&self) -> &[u8] {
        if self.taken == 0 {
            &self.out
        } else {
            &self.start
        }
    }

    fn emit(&mut self, bytes: &[u8]) {
        self.total += bytes.len() as u64;
        if self.total <= self.limit {
            self.out.extend_from_slice(bytes);
        }
    }

    fn bare(&mut self) {
        self.bare_line_endings += 1;
        self.emit(b"\r\n");
        self.state = State::LineStartBare;
    }

    /// Feeds input. In DATA mode returns `Some(n)` when the end of data was found after
    /// consuming `n` bytes of `input` (the rest belongs to the next command).
    pub fn feed(&mut self, input: &[u8]) -> Option<usize> {
        let mut i = 0;
        while i < input.len() {
            if self.state == State::Mid {
                // Fast path: copy up to the next CR or LF.
                let run = input[i..]
                    .iter()
                    .position(|&b| b == b'\r' || b == b'\n')
                    .unwrap_or(input.len() - i);
                if run > 0 {
                    self.emit(&input[i..i + run]);
                    i += run;
                    continue;
                }
            }
            let b = input[i];
            i += 1;
            match (self.state, b) {
                (State::Cr, b'\n') => {
                    self.emit(b"\r\n");
                    self.state = State::LineStart;
                }
                (State::Cr, _) => {
                    self.bare();
                    i -= 1; // look at this byte again at the start of the new line
                }
                (State::DotCr, b'\n') => {
                    self.state = State::Done;
                    return Some(i);
                }
                (State::Done, _) => return Some(i - 1),
                (State::DotCr, _) => {
                    // `.` + bare CR: the dot is text, the CR a line ending.
                    self.emit(b".");
                    self.bare();
                    i -= 1;
                }
                (State::Dot, b'\r') => self.state = State::DotCr,
                (State::Dot, b'\n') => {
                    // `<CRLF>.<LF>` is not the end of data: keep the dot as text.
                    self.emit(b".");
                    self.bare();
                }
                (State::Dot, other) => {
                    // Dot-stuffing: the first dot of the line is removed.
                    self.emit(&[other]);
                    self.state = State::Mid;
                }
                (State::LineStart, b'.') if self.mode == Mode::Dot => self.state = State::Dot,
                (_, b'\r') => self.state = State::Cr,
                (_, b'\n') => self.bare(),
                (_, other) => {
                    self.emit(&[other]);
                    self.state = State::Mid;
                }
            }
        }
        None
    }

    /// Ends the content (after the last BDAT chunk): a line ending or dot still undecided is
    /// decoded as text. Nothing may be fed afterwards.
    pub fn close(&mut self) {
        match self.state {
            State::Cr => self.bare(),
            State::Dot => self.emit(b"."),
            State::DotCr => {
                self.emit(b".");
                self.bare();
            }
            _ => {}
        }
        self.state = State::Done;
    }

    /// Ends the content and returns what was not taken.
    pub fn finish(mut self) -> Vec<u8> {
        self.close();
        self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(input: &[u8]) -> (Option<usize>, Vec<u8>) {
        let mut d = Decoder::new(Mode::Dot, 1 << 20);
        let end = d.feed(input);
        (end, d.finish())
    }

    #[test]
    fn ends_only_at_crlf_dot_crlf() {
        let (end, body) = data(b"Subject: x\r\n\r\nhello\r\n.\r\nQUIT\r\n");
        assert_eq!(end, Some(24));
        assert_eq!(body, b"Subject: x\r\n\r\nhello\r\n");
        assert_eq!(data(b".\r\n"), (Some(3), vec![]));
    }

    #[test]
    fn unstuffs_dots() {
        let (end, body) = data(b"..leading\r\n...\r\n.\r\n");
        assert!(end.is_some());
        assert_eq!(body, b".leading\r\n..\r\n");
    }

    #[test]
    fn smuggling_variants_never_end_data() {
        for evil in [
            &b"\n.\n"[..],
            b"\n.\r\n",
            b"\r.\r\n",
            b"\r\n.\n",
            b"\r\n.\r",
            b"\r\n.\rX",
        ] {
            let mut input = b"a".to_vec();
            input.extend_from_slice(evil);
            input.extend_from_slice(b"MAIL FROM:<x@evil.test>\r\n");
            let (end, body) = data(&input);
            assert_eq!(end, None, "{:?} ended DATA", String::from_utf8_lossy(evil));
            assert!(!body.windows(2).any(|w| w[1] == b'\n' && w[0] != b'\r'));
            assert!(!body.windows(2).any(|w| w[0] == b'\r' && w[1] != b'\n'));
            // The dot survives as text, so the client will stuff it when relaying.
            assert!(
                body.windows(3).any(|w| w == b"\n.\r") || body.windows(3).any(|w| w == b"\n.X")
            );
        }
    }

    #[test]
    fn split_across_reads() {
        let input = b"line1\r\nline2\r\n.\r\n";
        for cut in 0..input.len() {
            let mut d = Decoder::new(Mode::Dot, 1 << 20);
            let first = d.feed(&input[..cut]);
            assert_eq!(first, None);
            let end = d.feed(&input[cut..]);
            assert_eq!(end.map(|n| n + cut), Some(input.len()), "cut at {cut}");
            assert_eq!(d.finish(), b"line1\r\nline2\r\n");
        }
    }

    #[test]
    fn size_limit() {
        let mut d = Decoder::new(Mode::Dot, 4);
        assert!(d.feed(b"12345\r\n.\r\n").is_some());
        assert!(d.over_limit());
    }

    #[test]
    fn taken_content_and_the_rest_make_the_whole() {
        let mut input = b"Received: x\r\n\r\n".to_vec();
        input.extend(std::iter::repeat_n(b"..line\r\n".as_slice(), 20_000).flatten());
        input.extend_from_slice(b".\r\n");
        let mut d = Decoder::new(Mode::Dot, 1 << 30);
        let mut whole = Vec::new();
        for part in input.chunks(4096) {
            if d.feed(part).is_some() {
                break;
            }
            whole.extend(d.take());
        }
        assert!(d.taken() > 0);
        assert_eq!(d.start().len(), START_KEPT);
        assert!(d.start().starts_with(b"Received: x\r\n\r\n.line\r\n"));
        whole.extend(d.finish());
        let mut expected = b"Received: x\r\n\r\n".to_vec();
        expected.extend(std::iter::repeat_n(b".line\r\n".as_slice(), 20_000).flatten());
        assert_eq!(whole, expected);
    }

    #[test]
    fn chunks_normalize_but_keep_dots() {
        let mut d = Decoder::new(Mode::Chunks, 1 << 20);
        assert_eq!(d.feed(b".a\nb\r"), None);
        assert_eq!(d.feed(b"\n.\r"), None);
        assert_eq!(d.finish(), b".a\r\nb\r\n.\r\n");
    }
}
