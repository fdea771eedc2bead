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

/// Ends a [`Shutdown::child`] signal when dropped.
#[derive(Debug)]
pub struct Scope(#[allow(dead_code)] tokio::sync::oneshot::Sender<()>);

impl Shutdown {
    /// A narrower signal for tasks that belong to one configuration generation: it fires when
    /// this one does or when the returned [`Scope`] is dropped. Needs a tokio runtime.
    pub fn child(&self) -> (Scope, Shutdown) {
        let (trigger, child) = channel();
        let (scope, ended) = tokio::sync::oneshot::channel::<()>();
        let mut parent = self.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = parent.wait() => {}
                _ = ended => {}
            }
            trigger.fire();
        });
        (Scope(scope), child)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_child_ends_with_its_scope_or_its_parent() {
        let (trigger, root) = channel();
        let (scope, mut child) = root.child();
        assert!(!child.is_shutdown());
        drop(scope);
        tokio::time::timeout(std::time::Duration::from_secs(5), child.wait())
            .await
            .unwrap();
        let (_scope, mut other) = root.child();
        trigger.fire();
        tokio::time::timeout(std::time::Duration::from_secs(5), other.wait())
            .await
            .unwrap();
    }
}
