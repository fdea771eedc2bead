//! Giving disk space back after the queue shrinks. SQLite keeps a file at its largest size
//! and reuses freed pages; after a long outage drains, the file would stay at its peak. Once
//! the writer has had no work for a second, and the free pages are both a large share of the
//! file and large in bytes, while what is still queued is small, it rewrites the file
//! (`VACUUM`, which copies only the live pages, then a truncating checkpoint). The rewrite
//! holds up writes for as long as copying the live data takes, which the bound on it keeps
//! short; while more than that is queued, the free pages are left for new mail to reuse.
//! Incremental vacuum is not used: with a large free list SQLite searches the list for every
//! page it moves or drops, which made a drain of a million messages crawl (docs/decisions.md,
//! decision 31).

use rusqlite::Connection;
use std::time::{Duration, Instant};

/// Rewrite when free pages are more than this share of the file…
const FREE_SHARE: f64 = 0.25;
/// …and more than this many bytes…
const FREE_BYTES: i64 = 64 << 20;
/// …and the live pages at most this many bytes (the rewrite copies them).
const LIVE_BYTES: i64 = 256 << 20;
/// How long the writer must have had no work before it looks.
const IDLE: Duration = Duration::from_secs(1);

/// When the writer last had work, and whether it has looked since.
pub(super) struct Reclaim {
    busy: Instant,
    looked: bool,
}

impl Reclaim {
    pub(super) fn new() -> Self {
        Self {
            busy: Instant::now(),
            looked: false,
        }
    }

    /// The writer has work (a batch ran).
    pub(super) fn busy(&mut self) {
        self.busy = Instant::now();
        self.looked = false;
    }

    /// How long the writer may wait for work before it should call [`Reclaim::idle`].
    pub(super) fn idle_wait(&self) -> Duration {
        if self.looked {
            Duration::from_secs(3600)
        } else {
            IDLE
        }
    }

    /// The writer waited [`Reclaim::idle_wait`] without work: gives space back if the
    /// thresholds say so (once per quiet spell).
    pub(super) fn idle(&mut self, c: &Connection) {
        if self.looked || self.busy.elapsed() < IDLE {
            return;
        }
        self.looked = true;
        let started = Instant::now();
        match run(c, FREE_BYTES, LIVE_BYTES) {
            Ok(Some((before, after))) => tracing::info!(
                before_mb = before >> 20,
                after_mb = after >> 20,
                seconds = started.elapsed().as_secs_f64(),
                "gave the queue's free space back to the disk"
            ),
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "giving the queue's free space back failed"),
        }
    }
}

/// The file's pages: (all, free, page size).
fn pages(c: &Connection) -> rusqlite::Result<(i64, i64, i64)> {
    let pragma = |name: &str| c.query_row(&format!("PRAGMA {name}"), [], |r| r.get::<_, i64>(0));
    Ok((
        pragma("page_count")?,
        pragma("freelist_count")?,
        pragma("page_size")?,
    ))
}

/// Rewrites the file if more than `free_bytes` (and [`FREE_SHARE`] of it) is free and at
/// most `live_bytes` is in use; returns its size in bytes before and after, None when it
/// left it.
pub(super) fn run(
    c: &Connection,
    free_bytes: i64,
    live_bytes: i64,
) -> rusqlite::Result<Option<(i64, i64)>> {
    let (all, free, size) = pages(c)?;
    let worth = all > 0
        && free as f64 > FREE_SHARE * all as f64
        && free * size > free_bytes
        && (all - free) * size <= live_bytes;
    if !worth {
        return Ok(None);
    }
    c.execute_batch("VACUUM")?;
    // The rewritten pages are in the log: move them into the file and cut both back, unless
    // a reader holds the log for more than a second (a later checkpoint then does it).
    c.busy_timeout(Duration::from_secs(1))?;
    let checkpoint = c.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()));
    c.busy_timeout(Duration::from_secs(30))?;
    if let Err(e) = checkpoint {
        tracing::debug!(error = %e, "checkpoint after the rewrite deferred");
    }
    let (after, _, _) = pages(c)?;
    Ok(Some((all * size, after * size)))
}

#[cfg(test)]
mod tests {
    use super::super::schema::open_connection;
    use super::super::{Embedded, Store};
    use super::*;
    use crate::queue::{OperatorAction, suite};

    fn file_bytes(path: &std::path::Path) -> u64 {
        std::fs::metadata(path).unwrap().len()
    }

    /// After a queue empties, the file gives its space back to the disk, and only then.
    #[tokio::test]
    async fn a_drained_queue_gives_its_space_back() {
        let dir = tempfile::tempdir().unwrap();
        let s = Embedded::open(dir.path()).unwrap();
        let mut ids = Vec::new();
        for i in 0..100 {
            let mut m = suite::message(&format!("m{i:03}"), &[("a@x.test", "x.test")]);
            m.body = vec![b'x'; 100 << 10];
            s.insert(m).await.unwrap();
            ids.push(format!("m{i:03}"));
        }
        let c = open_connection(s.path()).unwrap();
        assert_eq!(
            run(&c, 1 << 20, 4 << 20).unwrap(),
            None,
            "nothing is free yet"
        );
        s.act(ids[..50].to_vec(), OperatorAction::Delete, 0)
            .await
            .unwrap();
        assert_eq!(
            run(&c, 1 << 20, 4 << 20).unwrap(),
            None,
            "half the mail is still queued: more than the rewrite may copy"
        );
        s.act(ids[50..].to_vec(), OperatorAction::Delete, 0)
            .await
            .unwrap();
        c.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
            .unwrap();
        let full = file_bytes(s.path());
        assert!(full > 9 << 20, "{full}");
        let (before, after) = run(&c, 1 << 20, 4 << 20).unwrap().expect("a rewrite");
        assert!(after * 20 < before, "{before} -> {after}");
        assert!(file_bytes(s.path()) * 20 < full, "the file itself shrank");
        // The queue still works on the rewritten file.
        s.insert(suite::message("after", &[("a@x.test", "x.test")]))
            .await
            .unwrap();
        assert_eq!(s.stats().await.unwrap().messages, 1);
    }
}
