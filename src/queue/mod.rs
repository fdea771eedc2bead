//! The message model and the [`Store`] trait. A message is an envelope, a body, and one
//! [`Recipient`] row each with its own status, attempts and next try. Backends: `embedded`
//! (SQLite, the default). This module touches the disk through its backends and nothing else.

pub mod embedded;
pub mod inspect;

use std::future::Future;
use std::pin::Pin;
use std::time::{SystemTime, UNIX_EPOCH};

/// A queue id: time-ordered (UUID v7), 32 hex digits.
pub type QueueId = String;

pub fn new_queue_id() -> QueueId {
    uuid::Uuid::now_v7().simple().to_string()
}

/// Milliseconds since the Unix epoch: the store's clock.
pub fn now_ms() -> i64 {
    to_ms(SystemTime::now())
}

pub fn to_ms(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// A message accepted by a session, about to be committed.
#[derive(Debug, Clone)]
pub struct NewMessage {
    pub id: QueueId,
    pub received_at_ms: i64,
    /// The reverse path without brackets; empty for the null sender.
    pub sender: String,
    /// MAIL FROM parameters as received (SIZE left out: it is recomputed), space-separated.
    pub mail_params: String,
    pub client: String,
    pub helo: String,
    pub recipients: Vec<NewRecipient>,
    /// The content as it will be relayed, trace header included, CRLF line endings.
    pub body: Vec<u8>,
    /// Whether the sender passed SPF or DKIM at reception (None: not evaluated).
    pub authenticated: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewRecipient {
    pub address: String,
    /// Lower case, no trailing dot: the key to the domain's route.
    pub domain: String,
    /// RCPT TO parameters as received, space-separated.
    pub params: String,
}

/// A recipient's state in the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Pending = 0,
    Delivered = 1,
    Failed = 2,
    Expired = 3,
}

/// Work for one delivery: a message's pending recipients in one domain, claimed by the
/// scheduler so that nobody else works on them at the same time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    pub queue_id: QueueId,
    pub domain: String,
    pub sender: String,
    pub mail_params: String,
    pub received_at_ms: i64,
    pub size: u64,
    pub recipients: Vec<Recipient>,
    /// Whether the sender passed SPF or DKIM at reception (None: not evaluated).
    pub authenticated: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recipient {
    /// The store's handle for this recipient row.
    pub row: i64,
    pub address: String,
    pub params: String,
    pub attempts: u32,
    /// A delay notification was already sent for this recipient.
    pub warned: bool,
}

/// What happened to one claimed recipient; also releases the claim.
#[derive(Debug, Clone)]
pub struct Update {
    pub row: i64,
    pub status: Status,
    /// Counts as a delivery attempt (false when the job was only put back).
    pub attempted: bool,
    /// For pending recipients: when to try next.
    pub next_attempt_ms: i64,
    pub last_reply: Option<String>,
    /// A delay notification is being sent for this recipient (never unset).
    pub warned: bool,
}

impl Update {
    pub fn new(
        row: i64,
        status: Status,
        attempted: bool,
        next_attempt_ms: i64,
        last_reply: Option<String>,
    ) -> Self {
        Self {
            row,
            status,
            attempted,
            next_attempt_ms,
            last_reply,
            warned: false,
        }
    }
}

/// Counts for status output and logs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    pub messages: u64,
    pub pending_recipients: u64,
    pub bytes: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the queue's disk is full")]
    Full,
    #[error("queue storage error: {0}")]
    Backend(String),
    #[error("the queue store is shut down")]
    Closed,
    #[error("message {0} not found in the queue")]
    NotFound(String),
}

pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

/// A durable queue. Every method that changes state returns only once the change is durable.
pub trait Store: Send + Sync + 'static {
    /// Commits a new message; all its recipients pending and due now.
    fn insert(&self, msg: NewMessage) -> StoreFuture<'_, ()>;
    /// Claims up to `limit` pending, unclaimed recipients due at `now_ms`, grouped into jobs.
    fn claim_due(&self, now_ms: i64, limit: usize) -> StoreFuture<'_, Vec<Job>>;
    /// The stored content of a message.
    fn body(&self, id: &str) -> StoreFuture<'_, Vec<u8>>;
    /// Records outcomes, releases claims, and queues the delivery status notifications those
    /// outcomes call for, all in one durable step (a message never leaves the queue before
    /// its notifications are in it). Returns true when the message left the queue because
    /// every recipient is final.
    fn record(
        &self,
        id: &str,
        updates: Vec<Update>,
        notifications: Vec<NewMessage>,
    ) -> StoreFuture<'_, bool>;
    /// Makes every pending, unclaimed recipient in these domains due at `now_ms`; returns
    /// how many there are.
    fn make_due(&self, domains: Vec<String>, now_ms: i64) -> StoreFuture<'_, u64>;
    /// While a domain's primary is down: recipients in these domains inserted from now on
    /// are due `for_ms` after they were received (`None` ends the hold: due at once), as if
    /// they had been claimed and held, without the two commits that would take. Ordered
    /// with inserts and [`Store::make_due`]: a message committed after the hold ends is due
    /// at once, one committed before it is reached by the `make_due` that follows.
    fn hold_new_mail(&self, domains: Vec<String>, for_ms: Option<i64>) -> StoreFuture<'_, ()>;
    /// The earliest next-attempt time among pending, unclaimed recipients.
    fn next_due(&self) -> StoreFuture<'_, Option<i64>>;
    fn stats(&self) -> StoreFuture<'_, Stats>;
    /// A cached recipient verification: (exists, expires at ms).
    fn cache_get(&self, key: String) -> StoreFuture<'_, Option<(bool, i64)>>;
    /// Caches a recipient verification until `expires_ms` (durably: it survives restarts).
    fn cache_put(&self, key: String, exists: bool, expires_ms: i64) -> StoreFuture<'_, ()>;
}
