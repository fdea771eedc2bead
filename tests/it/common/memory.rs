//! A process's resident memory, read from `/proc`, and its peak sampled while a test runs.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::Duration;

/// `pid`'s resident memory in bytes (0 when it is gone).
pub fn rss(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb << 10)
}

/// Samples a process's resident memory every 20 ms until [`PeakRss::stop`].
pub struct PeakRss {
    stop: Arc<AtomicBool>,
    peak: Arc<AtomicU64>,
    sampler: thread::JoinHandle<()>,
}

impl PeakRss {
    pub fn start(pid: u32) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let peak = Arc::new(AtomicU64::new(rss(pid)));
        let sampler = {
            let (stop, peak) = (stop.clone(), peak.clone());
            thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    peak.fetch_max(rss(pid), Ordering::SeqCst);
                    thread::sleep(Duration::from_millis(20));
                }
            })
        };
        Self {
            stop,
            peak,
            sampler,
        }
    }

    /// The highest resident memory seen, in bytes.
    pub fn stop(self) -> u64 {
        self.stop.store(true, Ordering::SeqCst);
        let _ = self.sampler.join();
        self.peak.load(Ordering::SeqCst)
    }
}
