//! The shutdown signal every long-running task holds: cheap to clone, awaitable, and
//! observable without waiting.

use tokio::sync::watch;

/// Held by the code that decides to shut down.
#[derive(Debug)]
pub struct Trigger(watch::Sender<bool>);

/// Held by tasks that must stop when told.
#[derive(Debug, Clone)]
pub struct Shutdown(watch::Receiver<bool>);

pub fn channel() -> (Trigger, Shutdown) {
    let (tx, rx) = watch::channel(false);
    (Trigger(tx), Shutdown(rx))
}

impl Trigger {
    pub fn fire(&self) {
        self.0.send_replace(true);
    }
}

impl Shutdown {
    pub fn is_shutdown(&self) -> bool {
        *self.0.borrow()
    }

    /// Resolves once shutdown has been triggered (at once if it already was). Also resolves
    /// when the trigger is dropped.
    pub async fn wait(&mut self) {
        let _ = self.0.wait_for(|v| *v).await;
    }
}
