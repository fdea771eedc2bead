//! The embedded store: one SQLite file in `state_dir` (WAL, `synchronous=FULL`), laid out as
//! the PostgreSQL store is: `schema` (the file, its tables and identity), `writer` (the one
//! thread that commits, in groups) running `ops` (the statements), `inspect` (operators'
//! reads, also used by the command line on the file directly), `guard` (the marker that
//! refuses a damaged queue), `recover` (adopt, reset), `outages` (primary health), `drills`
//! (fire drill results), `sts` (cached MTA-STS policies, TLS-RPT counters),
//! `registry` (domains and tenants managed at run time), `counts` (the counters behind
//! stats and depth) and `reclaim` (free space given back to the disk).
//! Reads use connections of their own, never the writer's.

mod counts;
mod drills;
pub mod guard;
mod inbox;
pub mod inspect;
mod ops;
mod outages;
mod reclaim;
mod recover;
mod registry;
mod schema;
mod spool;
mod sts;
mod writer;

pub use recover::{Adopted, adopt, reset};
pub(crate) use schema::{identity, migrate};

use super::body::BodyReader;
use super::inbox::{Candidate, FlagChange, Stored};
use super::registry::{Entry, Expect, Written};
use super::spool::Spooled;
use super::{
    Depth, DrillSummary, Filter, Job, Listed, NewMessage, OperatorAction, OutageChange,
    RouteOutages, Shown, Stats, Store, StoreError, StoreFuture, StoredDrill, StoredStsPolicy,
    TlsRptCount, Update,
};
use rusqlite::{Connection, ErrorCode, OptionalExtension};
use schema::{SCHEMA, ensure_identity, open_connection};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, mpsc};
use tokio::sync::oneshot;
use writer::{Answer, Op, Writer, writer_loop};

/// The SQLite-backed queue.
pub struct Embedded {
    writer: mpsc::Sender<Op>,
    /// The writer thread, joined on drop: it holds the queue's lock until it has finished.
    thread: Option<std::thread::JoinHandle<()>>,
    /// Transactions committed (each one sync), for measuring group commit.
    commits: Arc<std::sync::atomic::AtomicU64>,
    reader: Arc<Mutex<Connection>>,
    reporter: Arc<Mutex<Connection>>,
    /// Told by the writer of every registry change it commits.
    watchers: Arc<registry::Watchers>,
    /// The scheduler's wake-up, told after each step of `make_due` so deliveries begin
    /// before a million held recipients are all due.
    wake: std::sync::OnceLock<Arc<tokio::sync::Notify>>,
    path: PathBuf,
}

/// Recipients [`Store::make_due`] changes per writer transaction.
const MAKE_DUE_STEP: usize = 20_000;

pub(super) fn backend(e: rusqlite::Error) -> StoreError {
    match e.sqlite_error_code() {
        Some(ErrorCode::DiskFull) => StoreError::Full,
        _ => StoreError::Backend(e.to_string()),
    }
}

/// Whether the database holds at least what its marker says was acknowledged (files judged
/// by [`guard`] first). The database is read on a read-only connection, which never rewrites
/// the log, so a refused queue is left as it was.
pub(crate) fn holds_what_it_acknowledged(
    state_dir: &Path,
    found: &guard::Found,
) -> Result<(), StoreError> {
    if let guard::Found::Existing(Some(marker)) = found {
        let in_db = identity(&state_dir.join(guard::DB_FILE))?;
        guard::verify(state_dir, marker, in_db.as_ref())?;
    }
    Ok(())
}

impl Embedded {
    /// Opens (creating if needed) the queue in `state_dir`. Claims left by a previous run are
    /// released: this process is the only one using the file (it holds the marker's lock).
    /// A queue whose files hold less than it acknowledged is refused ([`guard`]).
    pub fn open(state_dir: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(state_dir).map_err(|e| {
            StoreError::Backend(format!(
                "cannot create state_dir {}: {e}",
                state_dir.display()
            ))
        })?;
        let (guard, found) = guard::Guard::acquire(state_dir)?;
        let path = state_dir.join(guard::DB_FILE);
        holds_what_it_acknowledged(state_dir, &found)?;
        let conn = open_connection(&path)?;
        conn.execute_batch(SCHEMA).map_err(backend)?;
        conn.execute_batch(outages::SCHEMA).map_err(backend)?;
        conn.execute_batch(drills::SCHEMA).map_err(backend)?;
        conn.execute_batch(sts::SCHEMA).map_err(backend)?;
        conn.execute_batch(registry::SCHEMA).map_err(backend)?;
        conn.execute_batch(inbox::SCHEMA).map_err(backend)?;
        spool::prepare(&conn, state_dir)?;
        migrate(&conn).map_err(backend)?;
        let marker = ensure_identity(&conn).map_err(backend)?;
        guard.store(&marker)?;
        conn.execute("UPDATE recipients SET claimed = 0 WHERE claimed = 1", [])
            .map_err(backend)?;
        let reader = open_connection(&path)?;
        let reporter = open_connection(&path)?;
        let (tx, rx) = mpsc::channel();
        let commits = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let counter = commits.clone();
        let watchers = Arc::new(registry::Watchers::default());
        let writer = Writer {
            conn,
            guard,
            marker,
            watchers: watchers.clone(),
            remover: spool::Remover::start(),
        };
        let thread = std::thread::Builder::new()
            .name("mx2-store-writer".into())
            .spawn(move || writer_loop(writer, rx, &counter))
            .map_err(|e| StoreError::Backend(format!("cannot start the store writer: {e}")))?;
        Ok(Self {
            writer: tx,
            thread: Some(thread),
            commits,
            reader: Arc::new(Mutex::new(reader)),
            reporter: Arc::new(Mutex::new(reporter)),
            watchers,
            wake: std::sync::OnceLock::new(),
            path,
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The folder the queue lives in (`state_dir`).
    fn state_dir(&self) -> PathBuf {
        self.path
            .parent()
            .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
    }

    /// Transactions committed so far; each is one sync to disk.
    pub fn commits(&self) -> u64 {
        self.commits.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn send<T: Send + 'static>(&self, make: impl FnOnce(Answer<T>) -> Op) -> StoreFuture<'_, T> {
        let (tx, rx) = oneshot::channel();
        let sent = self.writer.send(make(tx));
        Box::pin(async move {
            sent.map_err(|_| StoreError::Closed)?;
            rx.await.map_err(|_| StoreError::Closed)?
        })
    }

    /// A read on the connection deliveries use (bodies, due times, the cache).
    fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> StoreFuture<'_, T> {
        Self::read_on(self.reader.clone(), f)
    }

    /// A read for operators (listings, depth, counts) on a connection of its own, so a slow
    /// report over a big queue never delays a delivery's read.
    fn report<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> StoreFuture<'_, T> {
        Self::read_on(self.reporter.clone(), f)
    }

    fn read_on<T: Send + 'static>(
        reader: Arc<Mutex<Connection>>,
        f: impl FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> StoreFuture<'static, T> {
        Box::pin(async move {
            tokio::task::spawn_blocking(move || {
                let conn = reader
                    .lock()
                    .map_err(|_| StoreError::Backend("reader lock poisoned".into()))?;
                f(&conn)
            })
            .await
            .map_err(|e| StoreError::Backend(e.to_string()))?
        })
    }
}

impl Drop for Embedded {
    /// Lets the writer finish what it was given and release the queue, so that the queue can
    /// be opened again as soon as this returns.
    fn drop(&mut self) {
        drop(std::mem::replace(&mut self.writer, mpsc::channel().0));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Store for Embedded {
    fn insert(&self, msg: NewMessage) -> StoreFuture<'_, ()> {
        self.send(|r| Op::Insert(Box::new(msg), r))
    }

    fn claim_due(&self, now_ms: i64, limit: usize) -> StoreFuture<'_, Vec<Job>> {
        self.send(|r| Op::Claim(now_ms, limit, r))
    }

    fn body(&self, id: &str) -> StoreFuture<'_, Vec<u8>> {
        let id = id.to_string();
        let dir = self.state_dir();
        self.read(move |c| {
            let (head, len) = spool::head(c, &id)
                .map_err(backend)?
                .ok_or_else(|| StoreError::NotFound(id.clone()))?;
            spool::whole(&dir, &id, head, len)
        })
    }

    fn insert_spooled(&self, msg: NewMessage, content: Spooled) -> StoreFuture<'_, ()> {
        if content.id != msg.id
            || content.path != crate::queue::spool::dir(&self.state_dir()).join(&msg.id)
        {
            let why = format!(
                "spool file {} is not message {}'s in this queue",
                content.path.display(),
                msg.id
            );
            return Box::pin(async move { Err(StoreError::Backend(why)) });
        }
        self.send(|r| Op::InsertSpooled(Box::new(msg), content, r))
    }

    fn body_reader(&self, id: &str) -> StoreFuture<'_, BodyReader> {
        let id = id.to_string();
        let dir = self.state_dir();
        let key = id.clone();
        let head = self.read(move |c| spool::head_for_delivery(c, &key).map_err(backend));
        Box::pin(async move {
            let (head, len) = head
                .await?
                .ok_or_else(|| StoreError::NotFound(id.clone()))?;
            spool::reader(&dir, &id, head, len).await
        })
    }

    fn record(
        &self,
        id: &str,
        updates: Vec<Update>,
        notifications: Vec<NewMessage>,
    ) -> StoreFuture<'_, bool> {
        let id = id.to_string();
        self.send(|r| Op::Record(id, updates, notifications, r))
    }

    fn make_due(&self, domains: Vec<String>, now_ms: i64) -> StoreFuture<'_, u64> {
        Box::pin(async move {
            // Those due already count too; the due-time index finds them (they are few).
            let d = domains.clone();
            let mut total = self
                .read(move |c| {
                    let mut stmt = c
                        .prepare_cached(
                            "SELECT COUNT(*) FROM recipients WHERE status = 0 AND claimed = 0
                             AND held = 0 AND next_attempt <= ?1 AND domain = ?2",
                        )
                        .map_err(backend)?;
                    let mut n = 0u64;
                    for d in &d {
                        n += stmt
                            .query_row(rusqlite::params![now_ms, d], |r| r.get::<_, i64>(0))
                            .map_err(backend)? as u64;
                    }
                    Ok(n)
                })
                .await?;
            // In steps (see `ops::make_due`): deliveries start after the first.
            loop {
                let d = domains.clone();
                let n = self
                    .send(|r| Op::MakeDue(d, now_ms, MAKE_DUE_STEP, r))
                    .await?;
                total += n;
                if n < MAKE_DUE_STEP as u64 {
                    return Ok(total);
                }
                if let Some(w) = self.wake.get() {
                    w.notify_one();
                }
            }
        })
    }

    fn forward_wakeups(&self, wake: Arc<tokio::sync::Notify>) {
        let _ = self.wake.set(wake);
    }

    fn next_due(&self) -> StoreFuture<'_, Option<i64>> {
        self.read(|c| {
            c.query_row(
                "SELECT MIN(next_attempt) FROM recipients WHERE status = 0 AND claimed = 0 AND held = 0",
                [],
                |r| r.get(0),
            )
            .map_err(backend)
        })
    }

    fn cache_get(&self, key: String) -> StoreFuture<'_, Option<(bool, i64)>> {
        self.read(move |c| {
            c.query_row(
                "SELECT exists_, expires_at FROM recipient_cache WHERE key = ?1",
                [&key],
                |r| Ok((r.get::<_, i64>(0)? != 0, r.get(1)?)),
            )
            .optional()
            .map_err(backend)
        })
    }

    fn cache_put(&self, key: String, exists: bool, expires_ms: i64) -> StoreFuture<'_, ()> {
        self.send(|r| Op::CachePut(key, exists, expires_ms, r))
    }

    fn list(&self, filter: Filter) -> StoreFuture<'_, Vec<Listed>> {
        self.report(move |c| inspect::list(c, &filter).map_err(backend))
    }

    fn count(&self, filter: Filter) -> StoreFuture<'_, u64> {
        self.report(move |c| inspect::count(c, &filter).map_err(backend))
    }

    fn show(&self, id: &str) -> StoreFuture<'_, Option<Shown>> {
        let id = id.to_string();
        self.report(move |c| inspect::show(c, &id).map_err(backend))
    }

    fn act(&self, ids: Vec<String>, action: OperatorAction, now_ms: i64) -> StoreFuture<'_, u64> {
        self.send(|r| Op::Act(ids, action, now_ms, r))
    }

    fn claim_message(&self, id: &str) -> StoreFuture<'_, Vec<Job>> {
        let id = id.to_string();
        self.send(|r| Op::ClaimMessage(id, r))
    }

    fn depth(&self) -> StoreFuture<'_, Vec<Depth>> {
        self.report(|c| counts::depth(c).map_err(backend))
    }

    fn hold_new_mail(&self, domains: Vec<String>, for_ms: Option<i64>) -> StoreFuture<'_, ()> {
        self.send(|r| Op::HoldNewMail(domains, for_ms, r))
    }

    fn record_outage(&self, route: &str, change: OutageChange) -> StoreFuture<'_, ()> {
        let route = route.to_string();
        self.send(|r| Op::Outage(route, change, r))
    }

    fn outages(&self, per_route: usize) -> StoreFuture<'_, Vec<RouteOutages>> {
        self.report(move |c| outages::load(c, per_route).map_err(backend))
    }

    fn record_drill(&self, drill: StoredDrill, keep: usize) -> StoreFuture<'_, ()> {
        self.send(|r| Op::Drill(Box::new(drill), keep, r))
    }

    fn drills(&self, domain: &str, limit: usize) -> StoreFuture<'_, Vec<StoredDrill>> {
        let domain = domain.to_string();
        self.report(move |c| drills::load(c, &domain, limit).map_err(backend))
    }

    fn drill_summaries(&self) -> StoreFuture<'_, Vec<DrillSummary>> {
        self.report(|c| drills::summaries(c).map_err(backend))
    }

    fn sts_policy(&self, domain: &str) -> StoreFuture<'_, Option<StoredStsPolicy>> {
        let domain = domain.to_string();
        self.report(move |c| sts::policy(c, &domain).map_err(backend))
    }

    fn sts_put(&self, policy: StoredStsPolicy) -> StoreFuture<'_, ()> {
        self.send(|r| Op::StsPut(Box::new(policy), r))
    }

    fn tlsrpt_add(&self, count: TlsRptCount) -> StoreFuture<'_, ()> {
        self.send(|r| Op::TlsRptAdd(Box::new(count), r))
    }

    fn tlsrpt_take(&self, before_day: i64) -> StoreFuture<'_, Vec<TlsRptCount>> {
        // One process owns the file and counters are only ever added for today, so reading
        // and then dropping the past days loses nothing in between.
        Box::pin(async move {
            let counts = self
                .report(move |c| sts::before(c, before_day).map_err(backend))
                .await?;
            self.send(|r| Op::TlsRptForget(before_day, r)).await?;
            Ok(counts)
        })
    }

    fn registry(&self) -> StoreFuture<'_, Vec<Entry>> {
        self.report(|c| registry::entries(c).map_err(backend))
    }

    fn registry_version(&self) -> StoreFuture<'_, i64> {
        self.report(|c| registry::version(c).map_err(backend))
    }

    fn registry_put(
        &self,
        kind: &str,
        name: &str,
        value: String,
        expect: Expect,
    ) -> StoreFuture<'_, Written> {
        let (kind, name) = (kind.to_string(), name.to_string());
        let put = registry::Change::Put {
            kind,
            name,
            value,
            expect,
        };
        self.send(|r| Op::Registry(put, r))
    }

    fn registry_delete(&self, kind: &str, name: &str, rev: Option<i64>) -> StoreFuture<'_, bool> {
        let (kind, name) = (kind.to_string(), name.to_string());
        let done = self.send(|r| Op::Registry(registry::Change::Delete { kind, name, rev }, r));
        Box::pin(async move { Ok(matches!(done.await?, Written::Done(_))) })
    }

    fn watch_registry(&self, changed: Arc<tokio::sync::Notify>) {
        self.watchers.add(changed);
    }

    fn purge_domain(&self, domain: &str) -> StoreFuture<'_, u64> {
        let domain = super::domain_key(domain);
        self.send(|r| Op::PurgeDomain(domain, r))
    }

    fn inbox_credential(&self, key: &str) -> StoreFuture<'_, Option<String>> {
        let key = key.to_string();
        self.report(move |c| inbox::credential(c, &key).map_err(backend))
    }

    fn inbox_set_credential(&self, key: &str, hash: Option<String>) -> StoreFuture<'_, bool> {
        let key = key.to_string();
        self.send(|r| Op::InboxCredential(key, hash, r))
    }

    fn inbox_add_code(&self, key: &str, hash: String, expires_at_ms: i64) -> StoreFuture<'_, ()> {
        let key = key.to_string();
        self.send(|r| Op::InboxAddCode(key, hash, expires_at_ms, r))
    }

    fn inbox_use_code(&self, key: &str, hash: String, now_ms: i64) -> StoreFuture<'_, bool> {
        let key = key.to_string();
        self.send(|r| Op::InboxUseCode(key, hash, now_ms, r))
    }

    fn inbox_delete(
        &self,
        key: &str,
        ids: Vec<String>,
        drop_recipients: bool,
    ) -> StoreFuture<'_, ()> {
        let key = key.to_string();
        self.send(|r| Op::InboxDelete(key, ids, drop_recipients, r))
    }

    fn inbox_candidates(&self, domain: &str) -> StoreFuture<'_, Vec<Candidate>> {
        let domain = domain.to_string();
        self.report(move |c| inbox::candidates(c, &domain, super::now_ms()).map_err(backend))
    }

    fn inbox_keep(&self, keep: Vec<(String, i64)>) -> StoreFuture<'_, ()> {
        self.send(|r| Op::InboxKeep(keep, r))
    }

    fn inbox_publish(&self, domain: &str, entries: Vec<(String, String)>) -> StoreFuture<'_, ()> {
        let domain = super::domain_key(domain);
        self.send(|r| Op::InboxPublish(domain, entries, r))
    }

    fn inbox_purge(&self, now_ms: i64, limit: usize) -> StoreFuture<'_, u64> {
        self.send(|r| Op::InboxPurge(now_ms, limit, r))
    }

    fn inbox_stored(&self, key: &str) -> StoreFuture<'_, Option<Stored>> {
        let key = key.to_string();
        self.report(move |c| inbox::stored(c, &key).map_err(backend))
    }

    fn inbox_assign(&self, key: &str, ids: Vec<String>, now_ms: i64) -> StoreFuture<'_, ()> {
        let key = key.to_string();
        self.send(|r| Op::InboxAssign(key, ids, now_ms, r))
    }

    fn inbox_set_flags(
        &self,
        key: &str,
        uids: Vec<u32>,
        change: FlagChange,
    ) -> StoreFuture<'_, ()> {
        let key = key.to_string();
        self.send(|r| Op::InboxFlags(key, uids, change, r))
    }

    fn stats(&self) -> StoreFuture<'_, Stats> {
        self.report(|c| counts::stats(c).map_err(backend))
    }

    fn recount(&self) -> StoreFuture<'_, (Stats, Vec<Depth>)> {
        self.report(|c| counts::recount(c).map_err(backend))
    }
}

#[cfg(test)]
mod tests;
