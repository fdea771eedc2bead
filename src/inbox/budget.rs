//! The memory the emergency inbox may spend on messages read whole (`[inbox]
//! content_memory`): an IMAP `FETCH` or `SEARCH` of content and the web inbox's message
//! and attachment pages need a message whole (its MIME structure is parsed, the answer is
//! encoded at once), so each such read first takes its share of this budget and waits
//! while others hold it. Without it, memory was bounded only by the inbox's connection cap
//! times the largest message (200 × 50 MB). Downloads of a whole message (`.eml`) stream
//! and take nothing from it.

use crate::queue::body::BodyReader;
use std::sync::Arc;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The budget's unit.
const UNIT: u64 = 1 << 20;

/// How many times its size a message read whole occupies at its peak: the content, what
/// is made of it (an IMAP answer's literal, parsed parts, decoded attachments), the encoded
/// answer and its buffer's growth. Measured: an IMAP `FETCH BODY[]` of a 20 MB message
/// takes 80 MB, the web inbox's page of it 60 MB (`tests/it/inbox_memory.rs` prints both).
pub const WORKING_COPIES: u64 = 4;

/// A message read whole, holding its share of the budget while it is kept.
pub struct Whole {
    pub raw: Vec<u8>,
    _share: Share,
}

/// The shared budget.
pub struct Budget {
    permits: Arc<Semaphore>,
    units: u32,
}

/// A share of the budget, given back when dropped.
#[derive(Debug)]
pub struct Share {
    _held: OwnedSemaphorePermit,
}

impl Budget {
    /// A budget of `bytes` (at least one unit).
    pub fn new(bytes: u64) -> Self {
        let units = u32::try_from(bytes / UNIT)
            .unwrap_or(u32::MAX)
            .clamp(1, 1 << 24);
        Self {
            permits: Arc::new(Semaphore::new(units as usize)),
            units,
        }
    }

    /// The units a read of a `size`-byte message takes: [`WORKING_COPIES`] times its size,
    /// rounded up, at least one, at most the whole budget (so a message larger than the
    /// budget is still read, alone).
    pub fn units_for(&self, size: u64) -> u32 {
        let bytes = size.saturating_mul(WORKING_COPIES);
        let units = bytes.div_ceil(UNIT).max(1);
        u32::try_from(units).unwrap_or(u32::MAX).min(self.units)
    }

    /// Waits for the share a read of a `size`-byte message needs. Shares are handed out in
    /// the order they were asked for, so a large read is not starved by small ones.
    pub async fn take(&self, size: u64) -> Share {
        let n = self.units_for(size);
        match self.permits.clone().acquire_many_owned(n).await {
            Ok(p) => Share { _held: p },
            // The semaphore is never closed.
            Err(_) => unreachable!("the inbox's content budget was closed"),
        }
    }

    /// The content `reader` gives, read whole once its share is taken.
    pub async fn read_whole(&self, reader: BodyReader) -> std::io::Result<Whole> {
        let share = self.take(reader.size).await;
        Ok(Whole {
            raw: reader.into_vec().await?,
            _share: share,
        })
    }

    /// Units not held by any read now.
    #[cfg(test)]
    fn free_units(&self) -> u32 {
        u32::try_from(self.permits.available_permits()).unwrap_or(u32::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_read_takes_four_times_its_size_within_the_budget() {
        let b = Budget::new(64 << 20);
        assert_eq!(b.units_for(0), 1);
        assert_eq!(b.units_for(1000), 1);
        assert_eq!(b.units_for(1 << 20), 4);
        assert_eq!(b.units_for((1 << 20) + 1), 5);
        assert_eq!(b.units_for(15 << 20), 60);
        assert_eq!(
            b.units_for(50_000_000),
            64,
            "larger than the budget: all of it"
        );
        assert_eq!(b.units_for(u64::MAX), 64);
        assert_eq!(Budget::new(0).units_for(5), 1, "at least one unit");
    }

    #[tokio::test]
    async fn reads_wait_for_the_budget_in_order() {
        let b = Arc::new(Budget::new(10 << 20));
        let take = |size: u64| {
            let b = b.clone();
            tokio::spawn(async move { b.take(size).await })
        };
        let pause = || tokio::time::sleep(Duration::from_millis(50));
        let big = b.take(2 << 20).await; // 8 units
        let small = b.take(100).await; // 1 unit
        assert_eq!(b.free_units(), 1);
        let waiting = take(1 << 20); // 4 units
        pause().await;
        assert!(!waiting.is_finished(), "one unit left: the read waits");
        drop(small);
        pause().await;
        assert!(
            !waiting.is_finished(),
            "two units are not the four it needs"
        );
        let later = take(100);
        pause().await;
        assert!(
            !later.is_finished(),
            "in order: a small read does not pass a larger one waiting"
        );
        drop(big);
        let within = Duration::from_secs(5);
        let first = tokio::time::timeout(within, waiting)
            .await
            .unwrap()
            .unwrap();
        let second = tokio::time::timeout(within, later).await.unwrap().unwrap();
        assert_eq!(b.free_units(), 5);
        drop((first, second));
        assert_eq!(b.free_units(), 10);
    }
}
