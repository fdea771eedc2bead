//! The embedded queue's writer thread: group commit. Callers hand it operations and await
//! their durability; it gathers whatever is waiting (up to a count and a size), runs it in
//! one transaction with a savepoint per operation, syncs once, moves the queue's commit count
//! and marker, tells the registry's watchers when a registry change committed, and answers
//! every caller with what the commit decided; when it has had no work for a second it gives
//! free space back (`reclaim`). The statements themselves are in `ops` and
//! `registry` (and `inbox`); it never reads for operators (that is `inspect`).

use super::ops::{act, claim, claim_message, insert, make_due, purge_domain, record};
use super::reclaim::Reclaim;
use super::{backend, drills, guard, inbox, outages, registry, spool, sts};
use crate::queue::inbox::FlagChange;
use crate::queue::registry::Written;
use crate::queue::spool::Spooled;
use crate::queue::{
    Job, NewMessage, OperatorAction, OutageChange, StoreError, StoredDrill, StoredStsPolicy,
    TlsRptCount, Update,
};
use rusqlite::{Connection, params};
use std::sync::Arc;
use std::sync::mpsc;
use tokio::sync::oneshot;

/// Most operations, and most content bytes, gathered into one commit.
const MAX_BATCH_OPS: usize = 512;
const MAX_BATCH_BYTES: usize = 64 << 20;

pub(super) type Answer<T> = oneshot::Sender<Result<T, StoreError>>;

pub(super) enum Op {
    Insert(Box<NewMessage>, Answer<()>),
    /// A message whose content continues in a spool file (its head in `body`).
    InsertSpooled(Box<NewMessage>, Spooled, Answer<()>),
    Claim(i64, usize, Answer<Vec<Job>>),
    Record(String, Vec<Update>, Vec<NewMessage>, Answer<bool>),
    MakeDue(Vec<String>, i64, usize, Answer<u64>),
    CachePut(String, bool, i64, Answer<()>),
    Act(Vec<String>, OperatorAction, i64, Answer<u64>),
    ClaimMessage(String, Answer<Vec<Job>>),
    HoldNewMail(Vec<String>, Option<i64>, Answer<()>),
    Outage(String, OutageChange, Answer<()>),
    Drill(Box<StoredDrill>, usize, Answer<()>),
    StsPut(Box<StoredStsPolicy>, Answer<()>),
    TlsRptAdd(Box<TlsRptCount>, Answer<()>),
    TlsRptForget(i64, Answer<u64>),
    Registry(registry::Change, Answer<Written>),
    PurgeDomain(String, Answer<u64>),
    InboxCredential(String, Option<String>, Answer<bool>),
    InboxAssign(String, Vec<String>, i64, Answer<()>),
    InboxAddCode(String, String, i64, Answer<()>),
    InboxDelete(String, Vec<String>, bool, Answer<()>),
    InboxUseCode(String, String, i64, Answer<bool>),
    InboxFlags(String, Vec<u32>, FlagChange, Answer<()>),
    InboxKeep(Vec<(String, i64)>, Answer<()>),
    InboxPublish(String, Vec<(String, String)>, Answer<()>),
    InboxPurge(i64, usize, Answer<u64>),
}

/// Domains whose new mail is held (their primary is down), and for how long (ms).
pub(super) type Held = std::collections::HashMap<String, i64>;

impl Op {
    fn weight(&self) -> usize {
        match self {
            Op::Insert(m, _) | Op::InsertSpooled(m, _, _) => m.body.len(),
            Op::Record(_, _, dsns, _) => dsns.iter().map(|m| m.body.len()).sum(),
            _ => 0,
        }
    }
}

/// An operation's result, held until the batch's commit decides whether it stands.
pub(super) enum Done {
    Unit(Answer<()>, Result<(), StoreError>),
    /// An insert whose spool file becomes the store's if the commit stands (else it goes).
    Spooled(Answer<()>, Result<(), StoreError>, Spooled),
    Jobs(Answer<Vec<Job>>, Result<Vec<Job>, StoreError>),
    Bool(Answer<bool>, Result<bool, StoreError>),
    Count(Answer<u64>, Result<u64, StoreError>),
    Registry(Answer<Written>, Result<Written, StoreError>),
}

impl Done {
    fn answer(self, commit: &Result<(), StoreError>) {
        fn pick<T>(
            r: Result<T, StoreError>,
            commit: &Result<(), StoreError>,
        ) -> Result<T, StoreError> {
            match commit {
                Ok(()) => r,
                Err(StoreError::Full) => Err(StoreError::Full),
                Err(e) => Err(StoreError::Backend(e.to_string())),
            }
        }
        // A caller that went away (connection dropped) is no error here.
        match self {
            Done::Unit(tx, r) => drop(tx.send(pick(r, commit))),
            Done::Spooled(tx, r, mut file) => {
                let r = pick(r, commit);
                if r.is_ok() {
                    file.committed();
                }
                drop(tx.send(r));
            }
            Done::Jobs(tx, r) => drop(tx.send(pick(r, commit))),
            Done::Bool(tx, r) => drop(tx.send(pick(r, commit))),
            Done::Count(tx, r) => drop(tx.send(pick(r, commit))),
            Done::Registry(tx, r) => drop(tx.send(pick(r, commit))),
        }
    }
}

/// The writer thread's state: its connection, the marker it keeps up with each commit, and
/// who to tell of a registry change.
pub(super) struct Writer {
    pub(super) conn: Connection,
    pub(super) guard: guard::Guard,
    pub(super) marker: guard::Marker,
    pub(super) watchers: Arc<registry::Watchers>,
    pub(super) remover: spool::Remover,
}

pub(super) fn writer_loop(
    mut w: Writer,
    rx: mpsc::Receiver<Op>,
    commits: &std::sync::atomic::AtomicU64,
) {
    let mut held = Held::new();
    let mut reclaim = Reclaim::new();
    loop {
        let first = match rx.recv_timeout(reclaim.idle_wait()) {
            Ok(op) => op,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                reclaim.idle(&w.conn);
                continue;
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        };
        let mut batch = vec![first];
        let mut bytes = batch[0].weight();
        while batch.len() < MAX_BATCH_OPS && bytes < MAX_BATCH_BYTES {
            match rx.try_recv() {
                Ok(op) => {
                    bytes += op.weight();
                    batch.push(op);
                }
                Err(_) => break,
            }
        }
        let ops = batch.len();
        let started = std::time::Instant::now();
        run_batch(&mut w, batch, &mut held);
        crate::metrics::get()
            .commit_seconds
            .observe(started.elapsed().as_secs_f64());
        commits.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        tracing::trace!(ops, bytes, "queue commit");
        reclaim.busy();
    }
}

pub(super) fn run_batch(w: &mut Writer, batch: Vec<Op>, held: &mut Held) {
    let mut rest = batch;
    while !rest.is_empty() {
        rest = run_transaction(w, rest, held);
    }
}

/// Runs the operations in one transaction, each in its own savepoint so that one failure does
/// not spoil the others, and answers each once the commit decides. Returns the operations not
/// run because SQLite abandoned the transaction.
fn run_transaction(w: &mut Writer, batch: Vec<Op>, held: &mut Held) -> Vec<Op> {
    let tx = match w
        .conn
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
    {
        Ok(t) => t,
        Err(e) => {
            let err = Err(backend(e));
            for op in batch {
                let done = execute_failed(op, held);
                done.answer(&err);
            }
            return Vec::new();
        }
    };
    let mut done = Vec::with_capacity(batch.len());
    let mut ops = batch.into_iter();
    while let Some(op) = ops.next() {
        let result = match tx.execute_batch("SAVEPOINT op") {
            Ok(()) => {
                let d = execute(&tx, op, held);
                if let Some(e) = d.error().filter(|_| tx.is_autocommit()) {
                    // On SQLITE_FULL, IOERR or NOMEM SQLite may roll back the whole
                    // transaction, not just the statement: nothing run in it stands, and
                    // what would run next would commit on its own. Answer what ran with
                    // the error (a sender gets 452 and nothing is half-acknowledged), and
                    // run the rest in a new transaction.
                    tracing::error!(error = %e, ops = done.len() + 1, "queue transaction rolled back by SQLite");
                    drop(tx);
                    let err = Err(e);
                    for d in done.into_iter().chain(std::iter::once(d)) {
                        d.answer(&err);
                    }
                    return ops.collect();
                }
                let end = if d.is_ok() {
                    "RELEASE op"
                } else {
                    "ROLLBACK TO op; RELEASE op"
                };
                if let Err(e) = tx.execute_batch(end) {
                    tracing::error!(error = %e, "queue savepoint failed");
                }
                d
            }
            Err(e) => {
                let d = execute_failed(op, held);
                tracing::error!(error = %e, "queue savepoint failed");
                d
            }
        };
        done.push(result);
    }
    // The commit count moves with the transaction; the marker follows once it is durable.
    let next = w.marker.commits + 1;
    let counted = tx
        .execute(
            "UPDATE meta SET value = ?1 WHERE key = 'commits'",
            [next.to_string()],
        )
        .is_ok_and(|n| n == 1);
    let commit = tx.commit().map_err(backend);
    match &commit {
        Ok(()) if counted => {
            w.marker.commits = next;
            w.guard.record(&w.marker);
        }
        Ok(()) => {}
        Err(e) => tracing::error!(error = %e, "queue commit failed"),
    }
    if commit.is_ok() {
        spool::sweep(&w.conn, &w.remover);
    }
    // Before the callers hear of it: once a change is acknowledged, its watchers know.
    if commit.is_ok() && done.iter().any(Done::changed_registry) {
        w.watchers.notify();
    }
    for d in done {
        d.answer(&commit);
    }
    Vec::new()
}

impl Done {
    fn is_ok(&self) -> bool {
        self.error().is_none()
    }

    fn changed_registry(&self) -> bool {
        matches!(self, Done::Registry(_, Ok(Written::Done(_))))
    }

    fn error(&self) -> Option<StoreError> {
        match self {
            Done::Unit(_, r) | Done::Spooled(_, r, _) => r.as_ref().err().cloned(),
            Done::Jobs(_, r) => r.as_ref().err().cloned(),
            Done::Bool(_, r) => r.as_ref().err().cloned(),
            Done::Count(_, r) => r.as_ref().err().cloned(),
            Done::Registry(_, r) => r.as_ref().err().cloned(),
        }
    }
}

fn execute_failed(op: Op, held: &mut Held) -> Done {
    let e = || StoreError::Backend("transaction could not start".into());
    match op {
        Op::Insert(_, r) => Done::Unit(r, Err(e())),
        Op::InsertSpooled(_, s, r) => Done::Spooled(r, Err(e()), s),
        Op::Claim(_, _, r) => Done::Jobs(r, Err(e())),
        Op::Record(_, _, _, r) => Done::Bool(r, Err(e())),
        Op::MakeDue(_, _, _, r) => Done::Count(r, Err(e())),
        Op::CachePut(_, _, _, r) => Done::Unit(r, Err(e())),
        Op::Act(_, _, _, r) => Done::Count(r, Err(e())),
        Op::ClaimMessage(_, r) => Done::Jobs(r, Err(e())),
        Op::Outage(_, _, r) => Done::Unit(r, Err(e())),
        Op::Drill(_, _, r) | Op::StsPut(_, r) | Op::TlsRptAdd(_, r) => Done::Unit(r, Err(e())),
        Op::TlsRptForget(_, r) => Done::Count(r, Err(e())),
        Op::Registry(_, r) => Done::Registry(r, Err(e())),
        Op::PurgeDomain(_, r) => Done::Count(r, Err(e())),
        Op::InboxCredential(_, _, r) | Op::InboxUseCode(_, _, _, r) => Done::Bool(r, Err(e())),
        Op::InboxAssign(_, _, _, r)
        | Op::InboxFlags(_, _, _, r)
        | Op::InboxAddCode(_, _, _, r)
        | Op::InboxDelete(_, _, _, r)
        | Op::InboxKeep(_, r)
        | Op::InboxPublish(_, _, r) => Done::Unit(r, Err(e())),
        Op::InboxPurge(_, _, r) => Done::Count(r, Err(e())),
        // Not a change to the file: it takes effect whatever the transaction does.
        Op::HoldNewMail(domains, for_ms, r) => Done::Unit(r, hold(held, domains, for_ms)),
    }
}

/// Starts or ends holding new mail for these domains (never fails: nothing is written).
fn hold(held: &mut Held, domains: Vec<String>, for_ms: Option<i64>) -> Result<(), StoreError> {
    for d in domains {
        match for_ms {
            Some(ms) => held.insert(d, ms),
            None => held.remove(&d),
        };
    }
    Ok(())
}

fn execute(c: &Connection, op: Op, held: &mut Held) -> Done {
    match op {
        Op::Insert(m, r) => Done::Unit(r, insert(c, &m, held).map_err(backend)),
        Op::InsertSpooled(m, s, r) => {
            let done = spool::insert(c, &m, &s, held).map_err(backend);
            Done::Spooled(r, done, s)
        }
        Op::HoldNewMail(domains, for_ms, r) => Done::Unit(r, hold(held, domains, for_ms)),
        Op::Claim(now, limit, r) => Done::Jobs(r, claim(c, now, limit).map_err(backend)),
        Op::Record(id, updates, dsns, r) => {
            Done::Bool(r, record(c, &id, &updates, &dsns).map_err(backend))
        }
        Op::MakeDue(domains, now, limit, r) => {
            Done::Count(r, make_due(c, &domains, now, limit).map_err(backend))
        }
        Op::CachePut(key, exists, expires, r) => Done::Unit(
            r,
            c.prepare_cached("INSERT OR REPLACE INTO recipient_cache (key, exists_, expires_at) VALUES (?1, ?2, ?3)")
                .and_then(|mut st| st.execute(params![key, i64::from(exists), expires]))
                .map(|_| ())
                .map_err(backend),
        ),
        Op::Act(ids, action, now, r) => Done::Count(r, act(c, &ids, action, now).map_err(backend)),
        Op::ClaimMessage(id, r) => Done::Jobs(r, claim_message(c, &id).map_err(backend)),
        Op::Outage(route, change, r) => {
            Done::Unit(r, outages::record(c, &route, change).map_err(backend))
        }
        Op::Drill(d, keep, r) => Done::Unit(r, drills::record(c, &d, keep).map_err(backend)),
        Op::StsPut(p, r) => Done::Unit(r, sts::put(c, &p).map_err(backend)),
        Op::TlsRptAdd(n, r) => Done::Unit(r, sts::add(c, &n).map_err(backend)),
        Op::TlsRptForget(day, r) => Done::Count(r, sts::forget(c, day).map_err(backend)),
        Op::Registry(change, r) => {
            Done::Registry(r, registry::apply(c, &change).map_err(backend))
        }
        Op::PurgeDomain(domain, r) => Done::Count(r, purge_domain(c, &domain).map_err(backend)),
        Op::InboxCredential(key, hash, r) => Done::Bool(
            r,
            inbox::set_credential(c, &key, hash.as_deref(), crate::queue::now_ms())
                .map_err(backend),
        ),
        Op::InboxAssign(key, ids, now, r) => {
            Done::Unit(r, inbox::assign(c, &key, &ids, now).map_err(backend))
        }
        Op::InboxFlags(key, uids, change, r) => {
            Done::Unit(r, inbox::set_flags(c, &key, &uids, change).map_err(backend))
        }
        Op::InboxAddCode(key, hash, expires, r) => Done::Unit(
            r,
            inbox::add_code(c, &key, &hash, expires, crate::queue::now_ms()).map_err(backend),
        ),
        Op::InboxDelete(key, ids, drop, r) => {
            Done::Unit(r, inbox::delete(c, &key, &ids, drop).map_err(backend))
        }
        Op::InboxUseCode(key, hash, now, r) => {
            Done::Bool(r, inbox::use_code(c, &key, &hash, now).map_err(backend))
        }
        Op::InboxKeep(keep, r) => Done::Unit(r, inbox::set_keep(c, &keep).map_err(backend)),
        Op::InboxPublish(domain, entries, r) => {
            Done::Unit(r, inbox::publish(c, &domain, &entries).map_err(backend))
        }
        Op::InboxPurge(now, limit, r) => {
            Done::Count(r, inbox::purge(c, now, limit).map_err(backend))
        }
    }
}
