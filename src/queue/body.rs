//! A stored message's content as a stream: [`BodyReader`] hands the content out in chunks, so
//! that delivering, exporting or quoting a message never needs it whole in memory.

use std::os::unix::fs::FileExt;
use std::pin::Pin;
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncReadExt};

/// How much of the content one read asks for at most (the size of a delivery's buffer for
/// a message at least this large; smaller ones get a buffer their size). 256 KiB: with 64 KiB
/// a drain of 50 MB messages from spool files spent its time handing small reads to the
/// blocking pool and waiting on the disk in small requests (BENCHMARKS.md).
pub const CHUNK: usize = 256 << 10;

/// A message's stored content, read in order from the start.
pub struct BodyReader {
    /// The content's length in bytes.
    pub size: u64,
    source: Source,
}

/// Where the content comes from.
enum Source {
    /// Any reader (database chunks, content in memory).
    Stream(Pin<Box<dyn AsyncRead + Send>>),
    /// A head held in memory, then a byte range of a file, read straight into the caller's
    /// buffer on the blocking pool (no second buffer, no second copy: see [`FileRange`]).
    File {
        head: std::io::Cursor<Vec<u8>>,
        file: FileRange,
    },
}

/// How far ahead of a reader that goes on past its first read the file's pages are asked for
/// (`POSIX_FADV_WILLNEED`): decision 46.
pub const READ_AHEAD: u64 = 8 << 20;

/// The most one `POSIX_FADV_WILLNEED` call asks for. The kernel reads no more per call than
/// the larger of the file's readahead window and the device's largest request (128–256 KiB
/// and 512–1280 KiB on most devices), and drops the rest: asked for in pieces this size, the
/// whole of [`READ_AHEAD`] is read on such devices too.
const PIECE: u64 = 512 << 10;

/// Asks the kernel to read `len` bytes of `file` from `at` into the page cache now, without
/// waiting for them (a hint: nothing depends on it). Blocking (it allocates the pages and
/// queues the reads): call it on the blocking pool.
pub fn ask_ahead(file: &std::fs::File, mut at: u64, len: u64) {
    let end = at.saturating_add(len);
    while at < end {
        let n = (end - at).min(PIECE);
        if let Some(n) = std::num::NonZeroU64::new(n)
            && rustix::fs::fadvise(file, at, Some(n), rustix::fs::Advice::WillNeed).is_err()
        {
            return;
        }
        at += n;
    }
}

/// `len` bytes of `file` from `offset`, read in order.
pub struct FileRange {
    pub file: Arc<std::fs::File>,
    pub offset: u64,
    pub len: u64,
    /// No line in the range starts with a dot, nor does the range: on the wire as it is.
    pub dot_free: bool,
    /// Where the pages asked for ahead end; None before the first read (a reader that
    /// stops after one read, such as a notification's quote, asks for nothing ahead).
    asked_to: Option<u64>,
}

impl FileRange {
    pub fn new(file: Arc<std::fs::File>, offset: u64, len: u64, dot_free: bool) -> Self {
        Self {
            file,
            offset,
            len,
            dot_free,
            asked_to: None,
        }
    }

    /// What to ask for ahead of a read of `want` bytes from here: from where the last
    /// request ended, up to [`READ_AHEAD`] past this read, once this read comes within half
    /// of that of the last request's end; none on the first read.
    fn ahead_of(&mut self, want: u64) -> Option<(u64, u64)> {
        let end = self.offset + want;
        let Some(asked) = self.asked_to else {
            self.asked_to = Some(end);
            return None;
        };
        if end + READ_AHEAD / 2 <= asked {
            return None;
        }
        let from = asked.max(end);
        let to = (end + READ_AHEAD).min(self.offset + self.len);
        self.asked_to = Some(to.max(asked));
        (to > from).then(|| (from, to - from))
    }

    /// The range's last two bytes (fewer if it is shorter), on the blocking pool.
    pub async fn last_bytes(&self) -> std::io::Result<Vec<u8>> {
        let n = self.len.min(2);
        let (file, at) = (self.file.clone(), self.offset + self.len - n);
        tokio::task::spawn_blocking(move || {
            let mut b = vec![0u8; n as usize];
            file.read_exact_at(&mut b, at).map(|()| b)
        })
        .await
        .map_err(std::io::Error::other)?
    }

    /// Up to `max` bytes of what is left into `buf` (cleared first), on the blocking pool.
    /// A file that ends before the range does is an error, not a short message.
    async fn read(&mut self, buf: &mut Vec<u8>, max: usize) -> std::io::Result<usize> {
        buf.clear();
        let want = usize::try_from(self.len).map_or(max, |n| n.min(max));
        if want == 0 {
            return Ok(0);
        }
        let (file, offset) = (self.file.clone(), self.offset);
        let ahead = self.ahead_of(want as u64);
        let mut owned = std::mem::take(buf);
        let (owned, got) = tokio::task::spawn_blocking(move || {
            if let Some((at, len)) = ahead {
                ask_ahead(&file, at, len);
            }
            owned.resize(want, 0);
            let mut filled = 0;
            while filled < want {
                match file.read_at(&mut owned[filled..], offset + filled as u64) {
                    Ok(0) => break,
                    Ok(n) => filled += n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        owned.clear();
                        return (owned, Err(e));
                    }
                }
            }
            owned.truncate(filled);
            (owned, Ok(filled))
        })
        .await
        .map_err(std::io::Error::other)?;
        *buf = owned;
        let got = got?;
        if got < want {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!(
                    "the content's file ends {} bytes early",
                    self.len - got as u64
                ),
            ));
        }
        self.offset += got as u64;
        self.len -= got as u64;
        Ok(got)
    }
}

impl BodyReader {
    pub fn new(size: u64, reader: impl AsyncRead + Send + 'static) -> Self {
        Self {
            size,
            source: Source::Stream(Box::pin(reader)),
        }
    }

    /// Content held in memory (small messages, and stores that keep content whole).
    pub fn from_vec(content: Vec<u8>) -> Self {
        Self::new(content.len() as u64, std::io::Cursor::new(content))
    }

    /// `head`, then the range `file` of a file.
    pub fn from_file(head: Vec<u8>, file: FileRange) -> Self {
        Self {
            size: head.len() as u64 + file.len,
            source: Source::File {
                head: std::io::Cursor::new(head),
                file,
            },
        }
    }

    /// The content as its head and a file range that goes on the wire as it is stored (no
    /// dot-stuffing), when it is so stored and nothing was read yet: a delivery over plain
    /// TCP hands the range to the kernel. The reader is then used up.
    pub fn take_dot_free_file(&mut self) -> Option<(Vec<u8>, FileRange)> {
        match &self.source {
            Source::File { head, file } if file.dot_free && head.position() == 0 => {}
            _ => return None,
        }
        let empty = Source::Stream(Box::pin(tokio::io::empty()));
        match std::mem::replace(&mut self.source, empty) {
            Source::File { head, file } => Some((head.into_inner(), file)),
            Source::Stream(_) => None,
        }
    }

    /// The next chunk of content into `buf` (cleared first, at most [`CHUNK`] bytes); false
    /// at the end.
    pub async fn next_chunk(&mut self, buf: &mut Vec<u8>) -> std::io::Result<bool> {
        self.next_up_to(buf, CHUNK).await
    }

    /// [`BodyReader::next_chunk`] of at most `max` bytes.
    async fn next_up_to(&mut self, buf: &mut Vec<u8>, max: usize) -> std::io::Result<bool> {
        buf.clear();
        let n = match &mut self.source {
            Source::Stream(r) => r.take(max as u64).read_to_end(buf).await?,
            Source::File { head, file } => match head.take(max as u64).read_to_end(buf).await? {
                0 => file.read(buf, max).await?,
                n => n,
            },
        };
        Ok(n > 0)
    }

    /// The first `max` bytes of the content at most (a notification quotes no more; the
    /// inbox's list reads a header's worth), reading no further than that.
    pub async fn prefix(mut self, max: usize) -> std::io::Result<Vec<u8>> {
        let (mut out, mut buf) = (Vec::new(), Vec::new());
        while out.len() < max
            && self
                .next_up_to(&mut buf, CHUNK.min(max - out.len()))
                .await?
        {
            out.extend_from_slice(&buf);
        }
        Ok(out)
    }

    /// The whole content in memory (the inbox's reads within its budget, tests).
    pub async fn into_vec(mut self) -> std::io::Result<Vec<u8>> {
        let mut out = Vec::with_capacity(usize::try_from(self.size).unwrap_or(0));
        let mut buf = Vec::new();
        while self.next_chunk(&mut buf).await? {
            out.extend_from_slice(&buf);
        }
        Ok(out)
    }
}

impl std::fmt::Debug for BodyReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BodyReader")
            .field("size", &self.size)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn chunks_cover_the_content_in_order() {
        let content: Vec<u8> = (0..(CHUNK * 2 + 7)).map(|i| (i % 251) as u8).collect();
        let mut r = BodyReader::from_vec(content.clone());
        assert_eq!(r.size, content.len() as u64);
        let (mut all, mut buf, mut chunks) = (Vec::new(), Vec::new(), 0);
        while r.next_chunk(&mut buf).await.unwrap() {
            assert!(buf.len() <= CHUNK);
            all.extend_from_slice(&buf);
            chunks += 1;
        }
        assert_eq!(all, content);
        assert_eq!(chunks, 3);
        let p = BodyReader::from_vec(content.clone())
            .prefix(10)
            .await
            .unwrap();
        assert_eq!(p, &content[..10]);
    }

    /// The pages asked for ahead of a reader: none for a first read (a reader that stops
    /// there asks for nothing), then up to [`READ_AHEAD`] past each read once it comes
    /// within half of that of the last request's end, each byte once, never past the range.
    #[test]
    fn read_ahead_follows_a_reader_that_goes_on() {
        let f = tempfile::tempfile().unwrap();
        let total = 3 * READ_AHEAD + 12_345;
        let mut r = FileRange::new(Arc::new(f), 100, total, false);
        let mut asked: Vec<(u64, u64)> = Vec::new();
        let mut first = true;
        while r.len > 0 {
            let want = r.len.min(CHUNK as u64);
            let ahead = r.ahead_of(want);
            if first {
                assert_eq!(ahead, None, "nothing ahead of the first read");
                first = false;
            }
            if let Some((at, len)) = ahead {
                assert!(at >= r.offset + want, "ahead of this read");
                assert!(at + len <= 100 + total, "within the range");
                assert!(len <= READ_AHEAD);
                if let Some(&(pa, pl)) = asked.last() {
                    assert_eq!(at, pa + pl, "each byte asked for once, in order");
                }
                asked.push((at, len));
            }
            // Whatever this read reaches was asked for, or is the part the kernel reads
            // for the read itself (the first two reads).
            if asked.len() > 1 {
                let (pa, pl) = *asked.last().unwrap();
                assert!(pa + pl >= r.offset + want);
            }
            r.offset += want;
            r.len -= want;
        }
        let (first_at, _) = asked[0];
        let (last_at, last_len) = *asked.last().unwrap();
        assert_eq!(
            first_at,
            100 + 2 * CHUNK as u64,
            "from the end of the second read"
        );
        assert_eq!(last_at + last_len, 100 + total, "up to the range's end");
        assert!(asked.len() > 2, "in several requests: {asked:?}");
    }

    /// A head, then a file range that is not the whole file.
    fn head_and_file(head: &[u8], content: &[u8]) -> (tempfile::NamedTempFile, BodyReader) {
        use std::io::Write;
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(b"skip").unwrap();
        f.write_all(content).unwrap();
        f.write_all(b"after").unwrap();
        let range = FileRange::new(
            Arc::new(f.reopen().unwrap()),
            4,
            content.len() as u64,
            false,
        );
        (f, BodyReader::from_file(head.to_vec(), range))
    }

    #[tokio::test]
    async fn a_prefix_of_head_and_file_is_their_first_bytes() {
        let content: Vec<u8> = (0..(CHUNK * 2)).map(|i| (i % 249) as u8).collect();
        let whole = [&b"head\r\n"[..], &content].concat();
        for max in [3, 6, 10, CHUNK + 1, whole.len(), whole.len() + 9] {
            let (_f, r) = head_and_file(b"head\r\n", &content);
            let p = r.prefix(max).await.unwrap();
            assert_eq!(p, &whole[..max.min(whole.len())], "prefix({max})");
        }
        let (_f, r) = head_and_file(b"head\r\n", &content);
        assert_eq!(r.into_vec().await.unwrap(), whole);
    }
}
