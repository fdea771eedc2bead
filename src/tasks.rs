//! Counting the tasks that must finish before the server exits (inbound connections,
//! deliveries in flight), so shutdown can wait for them.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::sync::Notify;

#[derive(Clone, Default)]
pub struct Tracker(Arc<Inner>);

#[derive(Default)]
struct Inner {
    running: AtomicUsize,
    idle: Notify,
}

struct Guard(Arc<Inner>);

impl Drop for Guard {
    fn drop(&mut self) {
        if self.0.running.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

impl Tracker {
    pub fn spawn<F: std::future::Future<Output = ()> + Send + 'static>(&self, f: F) {
        self.0.running.fetch_add(1, Ordering::SeqCst);
        let guard = Guard(self.0.clone());
        tokio::spawn(async move {
            let _guard = guard;
            f.await;
        });
    }

    pub fn running(&self) -> usize {
        self.0.running.load(Ordering::SeqCst)
    }

    /// Waits until no task is running.
    pub async fn idle(&self) {
        loop {
            let notified = self.0.idle.notified();
            if self.running() == 0 {
                return;
            }
            notified.await;
        }
    }
}
