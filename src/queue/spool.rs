//! Spool files: the content of a large message on local disk, outside the database, while it
//! is received and (embedded store) for as long as it is queued. A [`SpoolWriter`] takes the
//! content as it arrives through a bounded buffer; [`SpoolWriter::finish`] syncs the file and
//! its folder and hands over a [`Spooled`], which the store commits (or, dropped uncommitted,
//! removes). The folder is `state_dir/spool`; a file is named by its message's queue id.

use super::QueueId;
use std::path::{Path, PathBuf};
use tokio::io::{AsyncWriteExt, BufWriter};

/// The spool folder in `state_dir`.
pub const DIR: &str = "spool";

/// The write buffer of one spool file: all the content a session holds while it spools.
pub const WRITE_BUFFER: usize = 64 << 10;

/// The spool folder of the queue in `state_dir`.
pub fn dir(state_dir: &Path) -> PathBuf {
    state_dir.join(DIR)
}

/// Removes every spool file in `state_dir` (at start, for a store that keeps no content
/// there: those were never committed).
pub fn remove_all(state_dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir(state_dir)) else {
        return;
    };
    let removed = entries
        .flatten()
        .filter(|e| std::fs::remove_file(e.path()).is_ok())
        .count();
    if removed > 0 {
        tracing::info!(
            files = removed,
            "removed spool files of messages never committed"
        );
    }
}

/// Where sessions spool content: `state_dir/spool`.
#[derive(Debug, Clone)]
pub struct Spool {
    dir: PathBuf,
}

impl Spool {
    pub fn new(state_dir: &Path) -> Self {
        Self {
            dir: dir(state_dir),
        }
    }

    /// A new, empty spool file for message `id` (the folder is created if it is missing).
    pub async fn create(&self, id: &QueueId) -> std::io::Result<SpoolWriter> {
        tokio::fs::create_dir_all(&self.dir).await?;
        let path = self.dir.join(id);
        let file = tokio::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .await?;
        Ok(SpoolWriter {
            id: id.clone(),
            file: Some(BufWriter::with_capacity(WRITE_BUFFER, file)),
            path,
            len: 0,
            dots: DotLines::default(),
        })
    }
}

/// A spool file being written. Dropped before [`SpoolWriter::finish`], the file is removed.
#[derive(Debug)]
pub struct SpoolWriter {
    id: QueueId,
    path: PathBuf,
    file: Option<BufWriter<tokio::fs::File>>,
    len: u64,
    dots: DotLines,
}

/// Whether some line of the content written so far starts with a dot (the content's start
/// counts as a line start): content with none goes on the wire as it is stored, with no
/// dot-stuffing, so a delivery can hand the file to the kernel (`sendfile`).
#[derive(Debug, Default, Clone, Copy)]
struct DotLines {
    seen: bool,
    /// The last byte written (none yet: the next byte starts a line).
    last: Option<u8>,
}

impl DotLines {
    fn write(&mut self, bytes: &[u8]) {
        let Some(&last) = bytes.last() else { return };
        if !self.seen {
            let line_start = self.last.is_none_or(|b| b == b'\n');
            self.seen =
                (line_start && bytes[0] == b'.') || memchr::memmem::find(bytes, b"\n.").is_some();
        }
        self.last = Some(last);
    }
}

impl SpoolWriter {
    /// The queue id the file is named by.
    pub fn id(&self) -> &QueueId {
        &self.id
    }

    /// Bytes written so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub async fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        let Some(file) = self.file.as_mut() else {
            return Err(std::io::Error::other("spool file already finished"));
        };
        file.write_all(bytes).await?;
        self.len += bytes.len() as u64;
        self.dots.write(bytes);
        Ok(())
    }

    /// Writes out what is buffered, syncs the file and then its folder (the new name), so
    /// that the content survives a crash once this returns.
    pub async fn finish(mut self) -> std::io::Result<Spooled> {
        let Some(mut file) = self.file.take() else {
            return Err(std::io::Error::other("spool file already finished"));
        };
        file.flush().await?;
        file.get_mut().sync_all().await?;
        drop(file);
        let dir = self
            .path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default();
        tokio::task::spawn_blocking(move || std::fs::File::open(dir)?.sync_all())
            .await
            .map_err(std::io::Error::other)??;
        Ok(Spooled {
            id: std::mem::take(&mut self.id),
            path: std::mem::take(&mut self.path),
            len: self.len,
            dot_free: !self.dots.seen,
            committed: false,
        })
    }
}

impl Drop for SpoolWriter {
    fn drop(&mut self) {
        if !self.path.as_os_str().is_empty() {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// A synced spool file, ready to be committed with its message. Dropped before the store
/// calls [`Spooled::committed`], the file is removed: nothing refers to it.
#[derive(Debug)]
pub struct Spooled {
    pub id: QueueId,
    pub path: PathBuf,
    /// The content's length in bytes.
    pub len: u64,
    /// No line of the content starts with a dot (nor does the content): it goes on the wire
    /// as it is, unstuffed.
    pub dot_free: bool,
    committed: bool,
}

impl Spooled {
    /// The message referring to the file is committed: the file now belongs to the store.
    pub fn committed(&mut self) {
        self.committed = true;
    }
}

impl Drop for Spooled {
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn written_finished_and_kept_only_once_committed() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::new(dir.path());
        let mut w = spool.create(&"m1".to_string()).await.unwrap();
        w.write(b"hello ").await.unwrap();
        w.write(&vec![b'x'; WRITE_BUFFER * 2]).await.unwrap();
        let mut s = w.finish().await.unwrap();
        assert_eq!(s.len, 6 + 2 * WRITE_BUFFER as u64);
        assert_eq!(std::fs::metadata(&s.path).unwrap().len(), s.len);
        s.committed();
        let path = s.path.clone();
        drop(s);
        assert!(path.exists(), "a committed file stays");

        let s = spool
            .create(&"m2".to_string())
            .await
            .unwrap()
            .finish()
            .await
            .unwrap();
        let path = s.path.clone();
        drop(s);
        assert!(!path.exists(), "an uncommitted file goes");

        let w = spool.create(&"m3".to_string()).await.unwrap();
        let path = dir.path().join(DIR).join("m3");
        assert!(path.exists());
        drop(w);
        assert!(!path.exists(), "an abandoned file goes");
    }

    /// Writes `parts` one call each; whether the finished file is free of dot lines.
    async fn dot_free(parts: &[&[u8]]) -> bool {
        let dir = tempfile::tempdir().unwrap();
        let mut w = Spool::new(dir.path())
            .create(&"m".to_string())
            .await
            .unwrap();
        for p in parts {
            w.write(p).await.unwrap();
        }
        w.finish().await.unwrap().dot_free
    }

    #[tokio::test]
    async fn notes_whether_any_line_starts_with_a_dot_across_writes() {
        assert!(dot_free(&[b"a.b\r\n", b"c .\r\n", b"", b"x"]).await);
        assert!(dot_free(&[]).await, "no content, no dot line");
        assert!(
            !dot_free(&[b".first line"]).await,
            "the content's start is a line start"
        );
        assert!(!dot_free(&[b"", b".first line"]).await);
        assert!(!dot_free(&[b"a\r\n.b"]).await);
        assert!(
            !dot_free(&[b"a\r\n", b".b"]).await,
            "a line feed ends one write"
        );
        assert!(
            !dot_free(&[b"a\r\n", b"", b".b"]).await,
            "an empty write between"
        );
        assert!(!dot_free(&[b"a\r\n.", b"b\r\n"]).await);
        assert!(
            !dot_free(&[b"a\r\n.b", b"c\r\nd"]).await,
            "once seen, it stays"
        );
    }
}
