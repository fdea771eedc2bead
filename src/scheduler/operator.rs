//! Operators' actions on the queue (admin API, `mx2 queue …`): flush, hold, release,
//! delete, bounce now. The scheduler owns them because a flush must also wake delivery and
//! treat primaries as up, and a bounce must produce the same notifications a real failure
//! does.
//!
//! May call the `Store`, `record` and `commit`; must never deliver or change a route's health.

use super::Scheduler;
use super::bounce::Context;
use super::record;
use crate::delivery::reply::{Enhanced, RemoteReply};
use crate::queue::{OperatorAction, StoreError, now_ms};
use tracing::{info, warn};

impl Scheduler {
    /// Looks at the queue now (after a change that makes something due).
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Flush, hold, release or delete these messages; returns how many recipients (messages
    /// for delete) were touched.
    pub async fn act(&self, ids: Vec<String>, action: OperatorAction) -> Result<u64, StoreError> {
        let n = ids.len();
        let touched = self.store.act(ids, action, now_ms()).await?;
        info!(action = ?action, messages = n, changed = touched, "operator action");
        if matches!(action, OperatorAction::Flush | OperatorAction::Release) {
            self.wake();
        }
        Ok(touched)
    }

    /// Gives up on these messages now: every pending recipient fails with a notification to
    /// the sender as the domain's bounce policy allows. Recipients in delivery right now are
    /// left to finish. Returns how many messages had recipients returned.
    pub async fn bounce(&self, ids: Vec<String>) -> Result<u64, StoreError> {
        let reply = RemoteReply {
            code: 554,
            enhanced: Some(Enhanced {
                class: 5,
                subject: 0,
                detail: 0,
            }),
            text: format!(
                "delivery cancelled by the administrator of {}",
                self.settings.hostname
            ),
        };
        let mut n = 0;
        for id in ids {
            let jobs = self.store.claim_message(&id).await?;
            n += u64::from(!jobs.is_empty());
            for job in jobs {
                for r in &job.recipients {
                    warn!(queue_id = %job.queue_id, rcpt = %r.address, reply = %reply, "returned by the operator");
                }
                let updates = record::failed(&job, &reply, false, now_ms());
                self.record(&job, updates, Context::default()).await;
            }
        }
        Ok(n)
    }
}
