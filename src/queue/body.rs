//! A stored message's content as a stream: [`BodyReader`] hands the content out in chunks, so
//! that delivering, exporting or quoting a message never needs it whole in memory.

use std::pin::Pin;
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
    reader: Pin<Box<dyn AsyncRead + Send>>,
}

impl BodyReader {
    pub fn new(size: u64, reader: impl AsyncRead + Send + 'static) -> Self {
        Self {
            size,
            reader: Box::pin(reader),
        }
    }

    /// Content held in memory (small messages, and stores that keep content whole).
    pub fn from_vec(content: Vec<u8>) -> Self {
        Self::new(content.len() as u64, std::io::Cursor::new(content))
    }

    /// The next chunk of content into `buf` (cleared first, at most [`CHUNK`] bytes); false
    /// at the end.
    pub async fn next_chunk(&mut self, buf: &mut Vec<u8>) -> std::io::Result<bool> {
        buf.clear();
        let n = (&mut self.reader)
            .take(CHUNK as u64)
            .read_to_end(buf)
            .await?;
        Ok(n > 0)
    }

    /// The first `max` bytes of the content at most (a notification quotes no more).
    pub async fn prefix(mut self, max: usize) -> std::io::Result<Vec<u8>> {
        let mut out = Vec::new();
        (&mut self.reader)
            .take(max as u64)
            .read_to_end(&mut out)
            .await?;
        Ok(out)
    }
}

impl BodyReader {
    /// The whole content in memory (operators' exports, tests: one message at a time).
    pub async fn into_vec(mut self) -> std::io::Result<Vec<u8>> {
        let mut out = Vec::with_capacity(usize::try_from(self.size).unwrap_or(0));
        self.reader.read_to_end(&mut out).await?;
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
}
