//! Giving disk space back after the queue shrinks. SQLite keeps a file at its largest size
//! and reuses freed pages; a queue created by this mx2 has `auto_vacuum = INCREMENTAL`
//! (set before its first table), so the writer can move free pages to the end of the file
//! and cut them off, a few megabytes at a time between batches, when the free pages are
//! both a large share of the file and large in bytes. A queue created by an older mx2 has
//! no auto-vacuum: `VACUUM` with the server stopped converts it (README, operations).

use rusqlite::Connection;
use std::time::{Duration, Instant};

/// Reclaim when free pages are more than this share of the file…
const FREE_SHARE: f64 = 0.25;
/// …and more than this many bytes.
const FREE_BYTES: i64 = 64 << 20;
/// Pages given back per step (one short transaction each).
const STEP_PAGES: i64 = 1024;
/// Most time spent reclaiming at once, so that writes wait at most about this long.
const BUDGET: Duration = Duration::from_millis(50);
/// How often to look while the queue is busy.
const INTERVAL: Duration = Duration::from_secs(1);

/// When the writer last looked, and whether there was more to give back then.
pub(super) struct Reclaim {
    last: Instant,
    pending: bool,
}

impl Reclaim {
    pub(super) fn new() -> Self {
        Self {
            last: Instant::now(),
            pending: true,
        }
    }

    /// How long the writer may wait for work before it should look again.
    pub(super) fn idle_wait(&self) -> Duration {
        if self.pending {
            Duration::from_millis(20)
        } else {
            INTERVAL
        }
    }

    /// Gives back free pages for at most [`BUDGET`] if they exceed the thresholds; `idle`
    /// says the writer has nothing else to do (else it looks at most once an [`INTERVAL`]).
    pub(super) fn step(&mut self, c: &Connection, idle: bool) {
        if !idle && self.last.elapsed() < INTERVAL {
            return;
        }
        self.last = Instant::now();
        match run(c, FREE_BYTES) {
            Ok(more) => self.pending = more,
            Err(e) => {
                tracing::warn!(error = %e, "giving the queue's free space back failed");
                self.pending = false;
            }
        }
    }
}

/// Whether the free pages exceed both thresholds.
fn too_much_free(c: &Connection, free_bytes: i64) -> rusqlite::Result<bool> {
    let pragma = |name: &str| c.query_row(&format!("PRAGMA {name}"), [], |r| r.get::<_, i64>(0));
    let (pages, free, size) = (
        pragma("page_count")?,
        pragma("freelist_count")?,
        pragma("page_size")?,
    );
    Ok(pages > 0 && free as f64 > FREE_SHARE * pages as f64 && free * size > free_bytes)
}

/// Reclaims in steps within the budget while more than `free_bytes` (and [`FREE_SHARE`])
/// are free; true when there is more to give back.
pub(super) fn run(c: &Connection, free_bytes: i64) -> rusqlite::Result<bool> {
    let mode: i64 = c.query_row("PRAGMA auto_vacuum", [], |r| r.get(0))?;
    if mode != 2 {
        return Ok(false);
    }
    let started = Instant::now();
    while too_much_free(c, free_bytes)? {
        if started.elapsed() >= BUDGET {
            return Ok(true);
        }
        // incremental_vacuum returns a row per page freed: step through them.
        let mut stmt = c.prepare_cached(&format!("PRAGMA incremental_vacuum({STEP_PAGES})"))?;
        let mut rows = stmt.query([])?;
        while rows.next()?.is_some() {}
    }
    Ok(false)
}

#[cfg(test)]
mod tests {
    use super::super::schema::open_connection;
    use super::super::{Embedded, Store};
    use super::*;
    use crate::queue::{OperatorAction, suite};

    fn file_pages(c: &Connection) -> (i64, i64) {
        let get = |p: &str| {
            c.query_row(&format!("PRAGMA {p}"), [], |r| r.get(0))
                .unwrap()
        };
        (get("page_count"), get("freelist_count"))
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
        let (full, _) = file_pages(&c);
        assert!(!run(&c, 1 << 20).unwrap(), "nothing is free yet");
        assert_eq!(file_pages(&c).0, full);
        s.act(ids, OperatorAction::Delete, 0).await.unwrap();
        let (pages, free) = file_pages(&c);
        assert!(
            free * 2 > pages,
            "the deleted messages' pages are free: {free} of {pages}"
        );
        while run(&c, 1 << 20).unwrap() {}
        let (pages, free) = file_pages(&c);
        assert!(pages * 4 < full, "{pages} pages left of {full}");
        assert!(
            free * 4096 <= 1 << 20 || free * 4 <= pages,
            "{free} free of {pages}"
        );
    }
}
