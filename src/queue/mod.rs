//! The message model and the [`Store`] trait. A message is an envelope, a body, and one
//! [`Recipient`] row each with its own status, attempts and next try. Backends: `embedded`
//! (SQLite, the default) and `postgres` (a queue shared by several nodes). This module touches
//! the disk and PostgreSQL through its backends and nothing else.

pub mod body;
pub mod embedded;
pub mod inbox;
pub mod postgres;
pub mod registry;
pub mod spool;
#[doc(hidden)]
pub mod suite;

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
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
    /// Inserted held, as an operator's `hold` would leave it: never tried until released
    /// (a drill's own message, `crate::drill`; never set for anyone else's mail).
    pub held: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewRecipient {
    pub address: String,
    /// Lower case, no trailing dot: the key to the domain's route.
    pub domain: String,
    /// RCPT TO parameters as received, space-separated.
    pub params: String,
}

/// A recipient's state in the queue (stored as its number, shown as its lower-case name).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
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

#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("the queue's disk is full")]
    Full,
    #[error("queue storage error: {0}")]
    Backend(String),
    #[error("the queue store is shut down")]
    Closed,
    #[error("message {0} not found in the queue")]
    NotFound(String),
    /// The queue's files hold less than it acknowledged (the whole story and the way out).
    #[error("{0}")]
    Damaged(String),
}

pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

/// A durable queue. Every method that changes state returns only once the change is durable.
pub trait Store: Send + Sync + 'static {
    /// Commits a new message; all its recipients pending and due now.
    fn insert(&self, msg: NewMessage) -> StoreFuture<'_, ()>;
    /// Claims up to `limit` pending, unclaimed recipients due at `now_ms`, grouped into jobs.
    fn claim_due(&self, now_ms: i64, limit: usize) -> StoreFuture<'_, Vec<Job>>;
    /// The stored content of a message, whole in memory: for tests and the conformance
    /// suite. Every path of the server (delivery, notifications, exports, the inbox) reads
    /// through [`Store::body_reader`].
    fn body(&self, id: &str) -> StoreFuture<'_, Vec<u8>>;
    /// Commits a new message whose content is `msg.body` (its trace headers) followed by the
    /// spool file `content`, synced already; the file is the store's once this returns `Ok`
    /// (the embedded store keeps it; PostgreSQL copies it into the database, a chunk at a
    /// time, and removes it). Never reads the file whole into memory.
    fn insert_spooled(&self, msg: NewMessage, content: spool::Spooled) -> StoreFuture<'_, ()>;
    /// The stored content of a message as a stream of chunks, never whole in memory.
    fn body_reader(&self, id: &str) -> StoreFuture<'_, body::BodyReader>;
    /// Records outcomes, releases claims, and queues the delivery status notifications those
    /// outcomes call for, all in one durable step (a message never leaves the queue before
    /// its notifications are in it). Returns true when the message left the queue because
    /// every recipient is final (removed, or kept for the inbox: see [`Store::inbox_keep`]).
    fn record(
        &self,
        id: &str,
        updates: Vec<Update>,
        notifications: Vec<NewMessage>,
    ) -> StoreFuture<'_, bool>;
    /// Makes every pending, unclaimed recipient in these domains due at `now_ms`; returns
    /// how many there are. A store may do it in steps, so that deliveries of the first
    /// recipients begin before the last are due.
    fn make_due(&self, domains: Vec<String>, now_ms: i64) -> StoreFuture<'_, u64>;
    /// While a domain's primary is down: recipients in these domains inserted from now on
    /// are due `for_ms` after they were received (`None` ends the hold: due at once), as if
    /// they had been claimed and held, without the two commits that would take. Ordered
    /// with inserts and [`Store::make_due`]: a message committed after the hold ends is due
    /// at once, one committed before it is reached by the `make_due` that follows.
    /// A store may ignore it (the default: PostgreSQL, where the nodes sharing the queue
    /// each hold their own view): new mail is then parked on its first claim instead.
    fn hold_new_mail(&self, domains: Vec<String>, for_ms: Option<i64>) -> StoreFuture<'_, ()> {
        let _ = (domains, for_ms);
        Box::pin(async { Ok(()) })
    }
    /// The earliest next-attempt time among pending, unclaimed recipients.
    fn next_due(&self) -> StoreFuture<'_, Option<i64>>;
    fn stats(&self) -> StoreFuture<'_, Stats>;
    /// A cached recipient verification: (exists, expires at ms).
    fn cache_get(&self, key: String) -> StoreFuture<'_, Option<(bool, i64)>>;
    /// Caches a recipient verification until `expires_ms` (durably: it survives restarts).
    fn cache_put(&self, key: String, exists: bool, expires_ms: i64) -> StoreFuture<'_, ()>;

    // ---- operators' view and actions (admin API, `mx2 queue`) ----

    /// Messages with pending recipients that match `filter`, oldest first (by queue id,
    /// which is time-ordered), at most `filter.limit`, after `filter.after`.
    fn list(&self, filter: Filter) -> StoreFuture<'_, Vec<Listed>>;
    /// How many messages `filter` selects, its limit aside (to say "showing 1000 of 3148").
    fn count(&self, filter: Filter) -> StoreFuture<'_, u64>;
    /// One message with every recipient's state; None when it is not in the queue.
    fn show(&self, id: &str) -> StoreFuture<'_, Option<Shown>>;
    /// Applies an operator's action to the pending recipients of these messages (claimed
    /// ones, in delivery right now, are left alone except by `Delete`); returns how many
    /// messages it changed (a message none of whose recipients needed the change, or that is
    /// not in the queue, does not count).
    fn act(&self, ids: Vec<String>, action: OperatorAction, now_ms: i64) -> StoreFuture<'_, u64>;
    /// Claims every pending, unclaimed recipient of one message, held or not, due or not
    /// (to bounce it now); grouped into jobs by domain.
    fn claim_message(&self, id: &str) -> StoreFuture<'_, Vec<Job>>;
    /// Queue depth per recipient domain, for status, metrics and the dashboard. Answered
    /// without scanning the queue where the backend keeps counters (embedded).
    fn depth(&self) -> StoreFuture<'_, Vec<Depth>>;
    /// [`Store::stats`] and [`Store::depth`] computed by scanning every row: what maintained
    /// counters must equal (tests; the default suits a backend that keeps no counters).
    #[doc(hidden)]
    fn recount(&self) -> StoreFuture<'_, (Stats, Vec<Depth>)> {
        Box::pin(async move { Ok((self.stats().await?, self.depth().await?)) })
    }

    // ---- a queue shared by several nodes (the defaults suit a store of one node's own) ----

    /// Notifies `wake` whenever any node makes something due (new mail, a flush, a primary
    /// back up), so this node's scheduler looks at once. Polling stays the fallback.
    fn forward_wakeups(&self, _wake: Arc<tokio::sync::Notify>) {}
    /// This node found the primary of `route` down.
    fn primary_down(&self, _route: &str) -> StoreFuture<'_, ()> {
        Box::pin(async { Ok(()) })
    }
    /// This node found the primary of `route` up (a probe answered, or an operator flushed).
    fn primary_up(&self, _route: &str) -> StoreFuture<'_, ()> {
        Box::pin(async { Ok(()) })
    }
    /// Whether this node should probe the down primary of `route` now, so that one node
    /// probes per interval, or whether another node already found it up.
    fn probe_turn(&self, _route: &str, _interval_ms: i64) -> StoreFuture<'_, ProbeTurn> {
        Box::pin(async { Ok(ProbeTurn::Probe) })
    }

    // ---- primary health, kept across restarts ----

    /// Records a change in the outage history of the primary of `route` (written only when
    /// its health changes, never per probe). `Began` opens an outage unless one is open;
    /// `Ended` closes the open one; `Drained` marks the last closed one drained. Each route
    /// keeps its last [`crate::events::OUTAGES_KEPT`] outages. On a shared store (PostgreSQL)
    /// the history is the cluster's: the first node to see a change records it.
    fn record_outage(&self, route: &str, change: OutageChange) -> StoreFuture<'_, ()>;
    /// Every route's recorded outages, oldest first, at most `per_route` each. A route whose
    /// last outage has no `up_ms` was last known down, since its `down_ms`.
    fn outages(&self, per_route: usize) -> StoreFuture<'_, Vec<RouteOutages>>;

    // ---- the registry: domains and tenants managed at run time (`registry.rs`) ----

    /// Every registry entry, ordered by kind then name.
    fn registry(&self) -> StoreFuture<'_, Vec<registry::Entry>>;
    /// The number of the last registry change (0 when there never was one); a node polls it
    /// to learn of changes that no notification told it about.
    fn registry_version(&self) -> StoreFuture<'_, i64>;
    /// Writes an entry if it is as `expect` says; durable when it returns.
    fn registry_put(
        &self,
        kind: &str,
        name: &str,
        value: String,
        expect: registry::Expect,
    ) -> StoreFuture<'_, registry::Written>;
    /// Removes an entry (if at revision `rev`, when given); true when it was removed.
    fn registry_delete(&self, kind: &str, name: &str, rev: Option<i64>) -> StoreFuture<'_, bool>;
    /// Notifies `changed` whenever any node changes the registry (PostgreSQL: LISTEN/NOTIFY;
    /// embedded: after the commit). Polling [`Store::registry_version`] stays the fallback.
    fn watch_registry(&self, changed: Arc<tokio::sync::Notify>);
    /// Drops every pending recipient in `domain` (no notification to anyone): a message
    /// left with no pending recipient leaves the queue. Returns how many messages had a
    /// recipient dropped. Claimed recipients (in delivery now) are left alone.
    fn purge_domain(&self, domain: &str) -> StoreFuture<'_, u64>;

    // ---- fire drills (`crate::drill`): each domain's last results ----

    /// Keeps one drill's result, and only the domain's last `keep` (durable when it returns).
    fn record_drill(&self, drill: StoredDrill, keep: usize) -> StoreFuture<'_, ()>;
    /// The last `limit` drills of `domain`, newest first.
    fn drills(&self, domain: &str, limit: usize) -> StoreFuture<'_, Vec<StoredDrill>>;
    /// For each domain with a drill that ran (not skipped): the last such drill and when the
    /// last one passed; ordered by domain.
    fn drill_summaries(&self) -> StoreFuture<'_, Vec<DrillSummary>>;

    // ---- outbound TLS policies (`delivery::mta_sts`) and TLS reports (`tlsrpt`) ----

    /// The cached MTA-STS policy of `domain`, if one was ever stored (expired ones too: the
    /// caller decides).
    fn sts_policy(&self, domain: &str) -> StoreFuture<'_, Option<StoredStsPolicy>>;
    /// Stores (replaces) a domain's policy; durable when it returns.
    fn sts_put(&self, policy: StoredStsPolicy) -> StoreFuture<'_, ()>;
    /// Adds `count.count` sessions to the counter of its day, domain, policy type, result
    /// and MX host.
    fn tlsrpt_add(&self, count: TlsRptCount) -> StoreFuture<'_, ()>;
    /// Every counter of a day before `before_day`, removed from the store (one node of a
    /// cluster gets each counter once), ordered by day and domain.
    fn tlsrpt_take(&self, before_day: i64) -> StoreFuture<'_, Vec<TlsRptCount>>;

    // ---- the emergency inbox (`inbox.rs`): keys are `inbox::mailbox_key`s ----

    /// The argon2id hash (PHC string) a mailbox logs in with, if any: the one stored for it
    /// (`mx2 inbox passwd`) first, else the one its primary published (`inbox_publish`).
    fn inbox_credential(&self, key: &str) -> StoreFuture<'_, Option<String>>;
    /// Replaces the credentials list `domain`'s primary published (`(mailbox key, hash)`
    /// pairs): the last good copy, used while the primary is down. Durable.
    fn inbox_publish(&self, domain: &str, entries: Vec<(String, String)>) -> StoreFuture<'_, ()>;
    /// Stores (`Some`) or removes (`None`) a mailbox's own credential (never a published
    /// one); true when one was there.
    fn inbox_set_credential(&self, key: &str, hash: Option<String>) -> StoreFuture<'_, bool>;
    /// Keeps the hash of a one-time login code for a mailbox until `expires_at_ms`; drops
    /// every expired code. Durable.
    fn inbox_add_code(&self, key: &str, hash: String, expires_at_ms: i64) -> StoreFuture<'_, ()>;
    /// Uses a one-time login code: true when `hash` is a code of the mailbox that has not
    /// expired at `now_ms`; it is gone then (each code works once, also across nodes).
    fn inbox_use_code(&self, key: &str, hash: String, now_ms: i64) -> StoreFuture<'_, bool>;
    /// A user deleted these messages in the inbox: they no longer show in `key`'s mailbox;
    /// with `drop_recipients`, the pending recipients whose address is `key`'s mailbox are
    /// dropped too, claimed ones included (as an operator's delete drops them: a delivery in
    /// flight may still complete), and a message left with none pending leaves the queue.
    /// Durable.
    fn inbox_delete(
        &self,
        key: &str,
        ids: Vec<String>,
        drop_recipients: bool,
    ) -> StoreFuture<'_, ()>;
    /// The domains whose delivered mail the inbox keeps showing, each with for how long
    /// (ms, more than 0), replacing what was set before (`[inbox] keep_after_delivery`). A
    /// message whose last pending recipient becomes final with a delivered recipient in one
    /// of them is *kept* instead of removed: its content stays, no recipient is pending
    /// (never claimed or delivered again), it is out of `stats`, `depth` and listings, and
    /// the inbox shows it as delivered until its time is up. Durable.
    fn inbox_keep(&self, keep: Vec<(String, i64)>) -> StoreFuture<'_, ()>;
    /// Removes up to `limit` kept messages whose time is up at `now_ms` (content, spool
    /// file, recipients); returns how many.
    fn inbox_purge(&self, now_ms: i64, limit: usize) -> StoreFuture<'_, u64>;
    /// Every message with a pending recipient in `domain` (addresses as received), and, if
    /// the domain keeps delivered mail, every delivered recipient there of a message not
    /// removed and whose keeping has not run out.
    #[doc(hidden)]
    fn inbox_candidates(&self, domain: &str) -> StoreFuture<'_, Vec<inbox::Candidate>>;
    /// What is stored of a mailbox (None: never opened).
    #[doc(hidden)]
    fn inbox_stored(&self, key: &str) -> StoreFuture<'_, Option<inbox::Stored>>;
    /// Creates the mailbox if needed and gives each of `ids` (in this order) that has none
    /// the next UID; forgets the UIDs of messages no longer in the queue. Durable.
    #[doc(hidden)]
    fn inbox_assign(&self, key: &str, ids: Vec<String>, now_ms: i64) -> StoreFuture<'_, ()>;
    /// Changes the flags of these UIDs of a mailbox (others are ignored). Durable.
    fn inbox_set_flags(
        &self,
        key: &str,
        uids: Vec<u32>,
        change: inbox::FlagChange,
    ) -> StoreFuture<'_, ()>;
    /// A mailbox: every message with a pending (or kept, delivered) recipient whose address
    /// is `key`'s, in UID order, new ones given UIDs first (durably, in queue-id order).
    fn inbox_mailbox(&self, key: &str) -> StoreFuture<'_, inbox::Mailbox> {
        let key = key.to_string();
        Box::pin(async move {
            let domain = inbox::key_domain(&key).to_string();
            let found = inbox::select(&key, self.inbox_candidates(&domain).await?);
            let mut stored = self.inbox_stored(&key).await?;
            let new = inbox::unassigned(&found, stored.as_ref());
            if !new.is_empty() || stored.is_none() {
                self.inbox_assign(&key, new, now_ms()).await?;
                stored = self.inbox_stored(&key).await?;
            }
            Ok(inbox::view(found, stored.unwrap_or_default()))
        })
    }
}

/// One fire drill's result as the store keeps it: the columns listings need, and the whole
/// result (every step) as JSON text the store does not look into.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredDrill {
    pub domain: String,
    pub at_ms: i64,
    /// `passed`, `failed` or `skipped`.
    pub outcome: String,
    pub duration_ms: i64,
    pub result: String,
}

/// A domain's MTA-STS policy as fetched (RFC 8461), kept until `expires_ms`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredStsPolicy {
    pub domain: String,
    /// The `id=` of the `_mta-sts` TXT record it was fetched under.
    pub id: String,
    /// The policy file's text.
    pub policy: String,
    pub fetched_ms: i64,
    /// `fetched_ms` plus the policy's `max_age`.
    pub expires_ms: i64,
}

/// Sessions counted for a TLS report (RFC 8460): on `day` (days since the epoch, UTC), to
/// `domain`'s MX host `mx_host` under a policy of `policy_type` (`sts`, `tlsa`), with
/// `result` (`success` or an RFC 8460 result type such as `certificate-host-mismatch`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsRptCount {
    pub day: i64,
    pub domain: String,
    pub policy_type: String,
    pub result: String,
    pub mx_host: String,
    pub count: i64,
}

/// A domain's drills at a glance (dashboard, metrics, the overdue alert).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DrillSummary {
    /// The last drill that ran (passed or failed).
    pub last: StoredDrill,
    pub last_passed_ms: Option<i64>,
}

/// The outcome a summary counts: a skipped drill did not run.
pub const DRILL_SKIPPED: &str = "skipped";
/// The outcome of a drill whose every step passed.
pub const DRILL_PASSED: &str = "passed";

/// A change in a primary's health, for [`Store::record_outage`] (times in ms since the epoch).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutageChange {
    /// The primary stopped answering.
    Began { at_ms: i64 },
    /// It answers again; `held` recipients were made due at once.
    Ended { at_ms: i64, held: u64 },
    /// Everything held for it during the outage was handed over.
    Drained { at_ms: i64 },
}

/// One route's recorded outages, oldest first.
#[derive(Debug, Clone, PartialEq)]
pub struct RouteOutages {
    pub route: String,
    pub outages: Vec<crate::events::Outage>,
}

/// Outage rows ordered by route, then oldest first, grouped per route, each route's last
/// `per_route` kept.
pub(crate) fn group_outages(
    rows: Vec<(String, crate::events::Outage)>,
    per_route: usize,
) -> Vec<RouteOutages> {
    let mut out: Vec<RouteOutages> = Vec::new();
    for (route, outage) in rows {
        match out.last_mut().filter(|l| l.route == route) {
            Some(l) => l.outages.push(outage),
            None => out.push(RouteOutages {
                route,
                outages: vec![outage],
            }),
        }
    }
    for l in &mut out {
        let extra = l.outages.len().saturating_sub(per_route);
        l.outages.drain(..extra);
    }
    out
}

/// What a node does about a primary that is down (see [`Store::probe_turn`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeTurn {
    /// Probe it now.
    Probe,
    /// Another node is probing it this interval.
    Wait,
    /// Another node found it up since this node reported it down.
    Up,
}

/// Opens the queue the config names: the embedded store in `state_dir`, or PostgreSQL.
pub async fn open(config: &crate::config::Config) -> Result<Arc<dyn Store>, StoreError> {
    match &config.storage {
        crate::config::StorageConfig::Embedded => {
            let dir = config.state_dir.clone();
            let store = tokio::task::spawn_blocking(move || embedded::Embedded::open(&dir))
                .await
                .map_err(|e| StoreError::Backend(e.to_string()))??;
            Ok(Arc::new(store))
        }
        crate::config::StorageConfig::Postgres(pg) => {
            // Content is committed into PostgreSQL: a local spool file is never committed.
            spool::remove_all(&config.state_dir);
            Ok(Arc::new(postgres::Postgres::open(pg).await?))
        }
    }
}

/// One claimed recipient row, as a backend reads it: the message's job (its recipients not
/// yet filled in) and the recipient.
pub(crate) struct ClaimedRow {
    pub job: Job,
    pub recipient: Recipient,
}

/// Groups claimed rows into jobs: one per message and domain, ordered by queue id, each
/// job's recipients in row order.
pub(crate) fn into_jobs(mut rows: Vec<ClaimedRow>) -> Vec<Job> {
    rows.sort_by_key(|r| r.recipient.row);
    let mut jobs: BTreeMap<(String, String), Job> = BTreeMap::new();
    for r in rows {
        jobs.entry((r.job.queue_id.clone(), r.job.domain.clone()))
            .or_insert(r.job)
            .recipients
            .push(r.recipient);
    }
    jobs.into_values().collect()
}

/// A domain as the queue keys recipients by it (lower case, no trailing dot), from a name
/// as an operator or a caller wrote it.
pub fn domain_key(domain: &str) -> String {
    domain.trim_end_matches('.').to_lowercase()
}

/// The most messages one listing returns.
pub const MAX_LIST: usize = 10_000;
/// A listing's size when the caller does not say.
pub const DEFAULT_LIST: usize = 100;

/// How many messages a listing returns at most.
pub fn list_limit(f: &Filter) -> usize {
    match f.limit {
        0 => DEFAULT_LIST,
        n => n.min(MAX_LIST),
    }
}

/// Which messages an operator asks for. Text filters match case-insensitively anywhere in
/// the address.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Filter {
    pub domain: Option<String>,
    /// When not empty: only messages with a pending recipient in one of these domains (a
    /// tenant's view), whatever `domain` says besides.
    pub domains: Vec<String>,
    pub sender: Option<String>,
    pub recipient: Option<String>,
    /// Only messages received at or before this time (ms since the epoch).
    pub received_before_ms: Option<i64>,
    pub state: Option<State>,
    /// Paging: only messages whose queue id sorts after this one.
    pub after: Option<String>,
    pub limit: usize,
}

/// A message's state as an operator sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// Not tried yet, waiting for its first attempt.
    Queued,
    /// Tried, waiting for the next attempt.
    Deferred,
    /// Being delivered right now.
    Active,
    /// Held by an operator: never tried until released.
    Held,
}

impl State {
    /// A message's state from its pending recipients: any held, any claimed, any attempts.
    pub fn of(held: bool, active: bool, attempts: u32) -> State {
        if held {
            State::Held
        } else if active {
            State::Active
        } else if attempts > 0 {
            State::Deferred
        } else {
            State::Queued
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            State::Queued => "queued",
            State::Deferred => "deferred",
            State::Active => "active",
            State::Held => "held",
        }
    }
}

/// An operator's action on whole messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OperatorAction {
    /// Due now (the scheduler still respects the primary's health).
    Flush,
    Hold,
    Release,
    /// Removed without any notification.
    Delete,
}

/// One line of a queue listing (as the API sends it and the command line reads it).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Listed {
    pub id: String,
    pub received_at_ms: i64,
    pub sender: String,
    pub size: u64,
    /// Pending recipients.
    pub pending: Vec<String>,
    pub state: State,
    pub attempts: u32,
    pub next_attempt_ms: Option<i64>,
    pub last_reply: Option<String>,
}

/// One recipient of a shown message.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RecipientState {
    pub address: String,
    pub status: Status,
    pub held: bool,
    pub attempts: u32,
    pub next_attempt_ms: i64,
    pub last_reply: Option<String>,
}

/// A whole message as an operator sees it (as the API sends it and the command line reads it).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Shown {
    pub id: String,
    pub received_at_ms: i64,
    pub sender: String,
    pub mail_params: String,
    pub client: String,
    pub helo: String,
    pub size: u64,
    pub recipients: Vec<RecipientState>,
}

/// What the queue holds for one recipient domain.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Depth {
    pub domain: String,
    pub messages: u64,
    pub recipients: u64,
    pub held: u64,
    pub bytes: u64,
    /// When the oldest message with a pending recipient here arrived.
    pub oldest_ms: Option<i64>,
}

impl Status {
    /// The status a stored number stands for; None for a number no mx2 writes.
    pub fn from_stored(n: i64) -> Option<Status> {
        Some(match n {
            0 => Status::Pending,
            1 => Status::Delivered,
            2 => Status::Failed,
            3 => Status::Expired,
            _ => return None,
        })
    }

    /// The name operators see (as in JSON).
    pub fn name(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Delivered => "delivered",
            Status::Failed => "failed",
            Status::Expired => "expired",
        }
    }
}
