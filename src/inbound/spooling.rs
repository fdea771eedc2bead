//! Content that outgrows memory while it is received: once a transaction's decoded content
//! passes [`INLINE_MAX`], it is moved from the [`Decoder`] into a spool file as it arrives
//! (through the file's bounded write buffer), and the file is synced before the commit.
//! Smaller messages stay in memory and go into the store whole, as before. A spool that
//! fails (a full disk) discards the rest of the content, which is still read to the end so
//! that the client gets its answer (`452`/`451`) in step.
//!
//! Performs file I/O only; never decides a reply.

use super::data::Decoder;
use crate::queue::spool::{Spool, SpoolWriter, Spooled};
use crate::queue::{QueueId, StoreError, new_queue_id};

/// The most content of one transaction held in memory: larger content is spooled. 256 KiB:
/// two hundred sessions receiving large messages at once hold at most ~50 MiB of content
/// between them before their files take over (1 MiB each made that 200 MiB, most of mx2's
/// memory in `bench/scale`'s 200 × 50 MiB case). Nearly all mail is smaller and still goes
/// into the store in one write.
pub const INLINE_MAX: usize = 256 << 10;

/// The spool file of the transaction in progress, once its content outgrew memory.
#[derive(Debug, Default)]
pub struct Spooling {
    file: Option<SpoolWriter>,
    failed: Option<StoreError>,
}

impl Spooling {
    /// Forgets the file of an earlier transaction: a decoder nothing was taken from (or none)
    /// starts a new one.
    pub fn forget_unless_continued(&mut self, decoder: Option<&Decoder>) {
        if decoder.is_none_or(|d| d.taken() == 0) {
            *self = Self::default();
        }
    }

    /// The queue id the spool file was named by, if there is one.
    pub fn queue_id(&self) -> Option<QueueId> {
        self.file.as_ref().map(|f| f.id().clone())
    }

    /// After content was fed to `decoder`: moves what it decoded into the spool file once
    /// the content outgrew memory (from then on, all of it every time).
    pub async fn drain(&mut self, spool: &Spool, decoder: &mut Decoder) {
        if self.failed.is_some() {
            drop(decoder.take());
            return;
        }
        if self.file.is_none() {
            if decoder.pending() <= INLINE_MAX {
                return;
            }
            match spool.create(&new_queue_id()).await {
                Ok(f) => self.file = Some(f),
                Err(e) => {
                    self.fail(e);
                    drop(decoder.take());
                    return;
                }
            }
        }
        let bytes = decoder.take();
        if let Some(f) = self.file.as_mut()
            && let Err(e) = f.write(&bytes).await
        {
            self.fail(e);
        }
    }

    fn fail(&mut self, e: std::io::Error) {
        tracing::warn!(error = %e, "cannot spool message content; the message will be refused with 4xx");
        self.file = None;
        self.failed = Some(store_error(&e));
    }

    /// The content is complete: syncs the spool file (None: the content is in memory).
    pub async fn finish(&mut self) -> Result<Option<Spooled>, StoreError> {
        if let Some(e) = self.failed.take() {
            return Err(e);
        }
        match self.file.take() {
            None => Ok(None),
            Some(f) => f.finish().await.map(Some).map_err(|e| {
                tracing::warn!(error = %e, "cannot sync the spooled message content");
                store_error(&e)
            }),
        }
    }
}

fn store_error(e: &std::io::Error) -> StoreError {
    match e.raw_os_error() {
        Some(libc::ENOSPC | libc::EDQUOT) => StoreError::Full,
        _ => StoreError::Backend(format!("spool file: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inbound::data::Mode;

    #[tokio::test]
    async fn small_content_stays_in_memory_large_content_is_spooled_whole() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::new(dir.path());
        let mut s = Spooling::default();
        let mut d = Decoder::new(Mode::Chunks, 1 << 30);
        d.feed(&vec![b'a'; 1000]);
        s.drain(&spool, &mut d).await;
        assert_eq!(d.taken(), 0);
        assert!(s.finish().await.unwrap().is_none());

        let mut s = Spooling::default();
        let mut d = Decoder::new(Mode::Chunks, 1 << 30);
        let line = b"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcd\r\n";
        let mut sent = 0;
        while sent < 3 * INLINE_MAX {
            d.feed(line);
            sent += line.len();
            s.drain(&spool, &mut d).await;
            assert!(d.pending() <= INLINE_MAX + line.len());
        }
        let id = s.queue_id().expect("spooled");
        d.feed(b"end");
        d.close();
        s.drain(&spool, &mut d).await;
        let mut spooled = s.finish().await.unwrap().expect("spooled");
        assert_eq!(spooled.id, id);
        assert_eq!(spooled.len, sent as u64 + 3);
        let on_disk = std::fs::read(&spooled.path).unwrap();
        assert!(on_disk.ends_with(b"\r\nend"));
        spooled.committed();

        // A new transaction forgets the old file.
        let mut s2 = Spooling {
            file: Some(spool.create(&"old".to_string()).await.unwrap()),
            ..Default::default()
        };
        s2.forget_unless_continued(Some(&Decoder::new(Mode::Chunks, 10)));
        assert!(s2.queue_id().is_none());
        assert!(!dir.path().join("spool/old").exists());
    }
}
