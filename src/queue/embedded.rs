//! The embedded store: one SQLite file in `state_dir` (WAL, `synchronous=FULL`).
//! One writer thread does group commit: callers hand it operations and await their
//! durability; it gathers whatever is waiting, runs it in one transaction, syncs once, and
//! answers them all. Reads use a separate connection.

pub mod guard;
mod outages;

use super::{
    Action, ClaimedRow, Depth, Filter, Job, Listed, NewMessage, OutageChange, Recipient,
    RouteOutages, Shown, Stats, Status, Store, StoreError, StoreFuture, Update, inspect, into_jobs,
};
use rusqlite::{Connection, ErrorCode, OptionalExtension, params};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, mpsc};
use tokio::sync::oneshot;

/// Most operations, and most content bytes, gathered into one commit.
const MAX_BATCH_OPS: usize = 512;
const MAX_BATCH_BYTES: usize = 64 << 20;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS messages (
    id TEXT PRIMARY KEY,
    received_at INTEGER NOT NULL,
    sender TEXT NOT NULL,
    mail_params TEXT NOT NULL,
    client TEXT NOT NULL,
    helo TEXT NOT NULL,
    size INTEGER NOT NULL,
    body BLOB NOT NULL,
    auth INTEGER
);
CREATE TABLE IF NOT EXISTS recipients (
    id INTEGER PRIMARY KEY,
    message_id TEXT NOT NULL,
    address TEXT NOT NULL,
    domain TEXT NOT NULL,
    params TEXT NOT NULL,
    status INTEGER NOT NULL DEFAULT 0,
    claimed INTEGER NOT NULL DEFAULT 0,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt INTEGER NOT NULL,
    last_reply TEXT,
    warned INTEGER NOT NULL DEFAULT 0,
    held INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS recipients_due ON recipients(status, claimed, next_attempt);
CREATE INDEX IF NOT EXISTS recipients_message ON recipients(message_id);
CREATE INDEX IF NOT EXISTS recipients_domain ON recipients(domain, status);
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS recipient_cache (
    key TEXT PRIMARY KEY,
    exists_ INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
);
";

type Reply<T> = oneshot::Sender<Result<T, StoreError>>;

enum Op {
    Insert(Box<NewMessage>, Reply<()>),
    Claim(i64, usize, Reply<Vec<Job>>),
    Record(String, Vec<Update>, Vec<NewMessage>, Reply<bool>),
    MakeDue(Vec<String>, i64, Reply<u64>),
    CachePut(String, bool, i64, Reply<()>),
    Act(Vec<String>, Action, i64, Reply<u64>),
    ClaimMessage(String, Reply<Vec<Job>>),
    HoldNewMail(Vec<String>, Option<i64>, Reply<()>),
    Outage(String, OutageChange, Reply<()>),
}

/// Domains whose new mail is held (their primary is down), and for how long (ms).
type Held = std::collections::HashMap<String, i64>;

impl Op {
    fn weight(&self) -> usize {
        match self {
            Op::Insert(m, _) => m.body.len(),
            Op::Record(_, _, dsns, _) => dsns.iter().map(|m| m.body.len()).sum(),
            _ => 0,
        }
    }
}

/// The SQLite-backed queue.
pub struct Embedded {
    writer: mpsc::Sender<Op>,
    /// The writer thread, joined on drop: it holds the queue's lock until it has finished.
    thread: Option<std::thread::JoinHandle<()>>,
    /// Transactions committed (each one sync), for measuring group commit.
    commits: Arc<std::sync::atomic::AtomicU64>,
    reader: Arc<Mutex<Connection>>,
    reporter: Arc<Mutex<Connection>>,
    path: PathBuf,
}

fn backend(e: rusqlite::Error) -> StoreError {
    match e.sqlite_error_code() {
        Some(ErrorCode::DiskFull) => StoreError::Full,
        _ => StoreError::Backend(e.to_string()),
    }
}

fn open_connection(path: &Path) -> Result<Connection, StoreError> {
    let conn = Connection::open(path)
        .map_err(|e| StoreError::Backend(format!("{}: {e}", path.display())))?;
    conn.busy_timeout(std::time::Duration::from_secs(30))
        .map_err(backend)?;
    conn.pragma_update(None, "journal_mode", "WAL")
        .map_err(backend)?;
    conn.pragma_update(None, "synchronous", "FULL")
        .map_err(backend)?;
    Ok(conn)
}

/// The queue's identity as the database holds it (`meta`), read on a read-only connection;
/// None for a file without one (written by an mx2 without markers). A file SQLite cannot
/// read is reported as damaged.
pub(crate) fn identity(path: &Path) -> Result<Option<guard::Marker>, StoreError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let damaged = |e: rusqlite::Error| {
        StoreError::Damaged(format!(
            "the queue in {} is damaged: SQLite cannot read {}: {e}\n{}",
            dir.display(),
            path.display(),
            guard::recovery_help(dir)
        ))
    };
    let conn = Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .map_err(damaged)?;
    let _ = conn.busy_timeout(std::time::Duration::from_secs(30));
    let has_meta: i64 = conn
        .query_row(
            "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = 'meta'",
            [],
            |r| r.get(0),
        )
        .map_err(damaged)?;
    if has_meta == 0 {
        return Ok(None);
    }
    read_identity(&conn).map_err(damaged)
}

fn read_identity(c: &Connection) -> rusqlite::Result<Option<guard::Marker>> {
    let get = |key: &str| -> rusqlite::Result<Option<String>> {
        c.query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
            .optional()
    };
    Ok(match (get("queue_id")?, get("commits")?) {
        (Some(queue_id), Some(commits)) => Some(guard::Marker {
            queue_id,
            commits: commits.parse().unwrap_or(0),
        }),
        _ => None,
    })
}

/// The queue's identity, given one if the file has none yet.
fn ensure_identity(c: &Connection) -> rusqlite::Result<guard::Marker> {
    if let Some(m) = read_identity(c)? {
        return Ok(m);
    }
    let m = guard::Marker {
        queue_id: uuid::Uuid::now_v7().to_string(),
        commits: 0,
    };
    c.execute(
        "INSERT OR REPLACE INTO meta (key, value) VALUES ('queue_id', ?1), ('commits', '0')",
        [&m.queue_id],
    )?;
    Ok(m)
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
        if let guard::Found::Existing(Some(marker)) = &found {
            // Read before anything writes: a read-only connection never rewrites the log.
            guard::verify(state_dir, marker, identity(&path)?.as_ref())?;
        }
        let conn = open_connection(&path)?;
        conn.execute_batch(SCHEMA).map_err(backend)?;
        conn.execute_batch(outages::SCHEMA).map_err(backend)?;
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
        let writer = Writer {
            conn,
            guard,
            marker,
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
            path,
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Transactions committed so far; each is one sync to disk.
    pub fn commits(&self) -> u64 {
        self.commits.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn send<T: Send + 'static>(&self, make: impl FnOnce(Reply<T>) -> Op) -> StoreFuture<'_, T> {
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

/// What `mx2 queue adopt` found in the file it accepted.
#[derive(Debug)]
pub struct Adopted {
    pub messages: u64,
    pub recipients: u64,
    pub commits: u64,
    /// Where a copy of the files as they were was kept.
    pub copy: PathBuf,
}

/// Accepts the database in `state_dir` as it reads now as the queue (after a backup was
/// restored or a damaged file salvaged): checks it whole, gives it an identity if it has
/// none, and sets the marker to it. A copy of the files as they were is kept first. Fails
/// while a server holds the queue.
pub fn adopt(state_dir: &Path) -> Result<Adopted, StoreError> {
    // The marker is what is being replaced: only the lock matters here.
    let guard = guard::Guard::lock_only(state_dir)?;
    let path = state_dir.join(guard::DB_FILE);
    if std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0) == 0 {
        return Err(StoreError::Backend(format!(
            "{} is missing or empty: there is nothing to adopt (restore a backup there first, \
             or start empty with `mx2 queue reset --i-understand`)",
            path.display()
        )));
    }
    let copy = guard::copy_aside(state_dir).map_err(StoreError::Backend)?;
    let conn = open_connection(&path)?;
    let check: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .map_err(backend)?;
    if check != "ok" {
        return Err(StoreError::Backend(format!(
            "{} fails SQLite's integrity check ({check}): salvage it first with sqlite3 .recover \
             (README, \"Backup and recovery\")",
            path.display()
        )));
    }
    conn.execute_batch(SCHEMA).map_err(backend)?;
    migrate(&conn).map_err(backend)?;
    let marker = ensure_identity(&conn).map_err(backend)?;
    let count = |sql: &str| -> Result<u64, StoreError> {
        conn.query_row(sql, [], |r| r.get::<_, i64>(0))
            .map(|n| n.max(0) as u64)
            .map_err(backend)
    };
    let messages = count("SELECT COUNT(*) FROM messages")?;
    let recipients = count("SELECT COUNT(*) FROM recipients WHERE status = 0")?;
    guard.store(&marker)?;
    Ok(Adopted {
        messages,
        recipients,
        commits: marker.commits,
        copy,
    })
}

/// Moves the queue's files aside (into `state_dir/damaged-TIME`) so that the next start
/// creates an empty queue. Fails while a server holds the queue.
pub fn reset(state_dir: &Path) -> Result<(PathBuf, Vec<String>), StoreError> {
    let _lock = guard::Guard::lock_only(state_dir)?;
    guard::move_aside(state_dir).map_err(StoreError::Backend)
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
        self.read(move |c| {
            c.query_row("SELECT body FROM messages WHERE id = ?1", [&id], |r| {
                r.get(0)
            })
            .optional()
            .map_err(backend)?
            .ok_or(StoreError::NotFound(id))
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
        self.send(|r| Op::MakeDue(domains, now_ms, r))
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

    fn act(&self, ids: Vec<String>, action: Action, now_ms: i64) -> StoreFuture<'_, u64> {
        self.send(|r| Op::Act(ids, action, now_ms, r))
    }

    fn claim_message(&self, id: &str) -> StoreFuture<'_, Vec<Job>> {
        let id = id.to_string();
        self.send(|r| Op::ClaimMessage(id, r))
    }

    fn depth(&self) -> StoreFuture<'_, Vec<Depth>> {
        self.report(|c| inspect::depth(c).map_err(backend))
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

    fn stats(&self) -> StoreFuture<'_, Stats> {
        self.report(|c| {
            let (messages, bytes): (i64, i64) = c
                .query_row(
                    "SELECT COUNT(*), COALESCE(SUM(size), 0) FROM messages",
                    [],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .map_err(backend)?;
            let pending: i64 = c
                .query_row(
                    "SELECT COUNT(*) FROM recipients WHERE status = 0",
                    [],
                    |r| r.get(0),
                )
                .map_err(backend)?;
            Ok(Stats {
                messages: messages as u64,
                pending_recipients: pending as u64,
                bytes: bytes as u64,
            })
        })
    }
}

// ---- the writer thread -------------------------------------------------------------------

/// An operation's result, held until the batch's commit decides whether it stands.
enum Done {
    Unit(Reply<()>, Result<(), StoreError>),
    Jobs(Reply<Vec<Job>>, Result<Vec<Job>, StoreError>),
    Bool(Reply<bool>, Result<bool, StoreError>),
    Count(Reply<u64>, Result<u64, StoreError>),
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
            Done::Jobs(tx, r) => drop(tx.send(pick(r, commit))),
            Done::Bool(tx, r) => drop(tx.send(pick(r, commit))),
            Done::Count(tx, r) => drop(tx.send(pick(r, commit))),
        }
    }
}

/// The writer thread's state: its connection, and the marker it keeps up with each commit.
struct Writer {
    conn: Connection,
    guard: guard::Guard,
    marker: guard::Marker,
}

fn writer_loop(mut w: Writer, rx: mpsc::Receiver<Op>, commits: &std::sync::atomic::AtomicU64) {
    let mut held = Held::new();
    while let Ok(first) = rx.recv() {
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
    }
}

fn run_batch(w: &mut Writer, batch: Vec<Op>, held: &mut Held) {
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
    for d in done {
        d.answer(&commit);
    }
    Vec::new()
}

impl Done {
    fn is_ok(&self) -> bool {
        self.error().is_none()
    }

    fn error(&self) -> Option<StoreError> {
        match self {
            Done::Unit(_, r) => r.as_ref().err().cloned(),
            Done::Jobs(_, r) => r.as_ref().err().cloned(),
            Done::Bool(_, r) => r.as_ref().err().cloned(),
            Done::Count(_, r) => r.as_ref().err().cloned(),
        }
    }
}

fn execute_failed(op: Op, held: &mut Held) -> Done {
    let e = || StoreError::Backend("transaction could not start".into());
    match op {
        Op::Insert(_, r) => Done::Unit(r, Err(e())),
        Op::Claim(_, _, r) => Done::Jobs(r, Err(e())),
        Op::Record(_, _, _, r) => Done::Bool(r, Err(e())),
        Op::MakeDue(_, _, r) => Done::Count(r, Err(e())),
        Op::CachePut(_, _, _, r) => Done::Unit(r, Err(e())),
        Op::Act(_, _, _, r) => Done::Count(r, Err(e())),
        Op::ClaimMessage(_, r) => Done::Jobs(r, Err(e())),
        Op::Outage(_, _, r) => Done::Unit(r, Err(e())),
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
        Op::HoldNewMail(domains, for_ms, r) => Done::Unit(r, hold(held, domains, for_ms)),
        Op::Claim(now, limit, r) => Done::Jobs(r, claim(c, now, limit).map_err(backend)),
        Op::Record(id, updates, dsns, r) => {
            Done::Bool(r, record(c, &id, &updates, &dsns).map_err(backend))
        }
        Op::MakeDue(domains, now, r) => Done::Count(r, make_due(c, &domains, now).map_err(backend)),
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
    }
}

/// Brings a queue file written by an older mx2 up to the current schema: columns added
/// since the first release, each with its definition.
pub(super) fn migrate(c: &Connection) -> rusqlite::Result<()> {
    const ADDED: [(&str, &str, &str); 3] = [
        ("recipients", "warned", "INTEGER NOT NULL DEFAULT 0"),
        ("messages", "auth", "INTEGER"),
        ("recipients", "held", "INTEGER NOT NULL DEFAULT 0"),
    ];
    for (table, column, definition) in ADDED {
        let present: i64 = c
            .prepare(&format!(
                "SELECT COUNT(*) FROM pragma_table_info('{table}') WHERE name = '{column}'"
            ))?
            .query_row([], |r| r.get(0))?;
        if present == 0 {
            c.execute_batch(&format!(
                "ALTER TABLE {table} ADD COLUMN {column} {definition}"
            ))?;
        }
    }
    Ok(())
}

fn insert(c: &Connection, m: &NewMessage, held: &Held) -> rusqlite::Result<()> {
    c.prepare_cached(
        "INSERT INTO messages (id, received_at, sender, mail_params, client, helo, size, body, auth)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )?
    .execute(params![
        m.id,
        m.received_at_ms,
        m.sender,
        m.mail_params,
        m.client,
        m.helo,
        m.body.len() as i64,
        m.body,
        m.authenticated.map(i64::from)
    ])?;
    let mut stmt = c.prepare_cached(
        "INSERT INTO recipients (message_id, address, domain, params, next_attempt) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?;
    for r in &m.recipients {
        stmt.execute(params![
            m.id,
            r.address,
            r.domain,
            r.params,
            m.received_at_ms + held.get(&r.domain).copied().unwrap_or(0)
        ])?;
    }
    Ok(())
}

/// The columns [`claim_rows`] reads, in its order.
const CLAIM_COLUMNS: &str = "SELECT r.id, r.message_id, r.address, r.domain, r.params, r.attempts,
                m.sender, m.mail_params, m.received_at, m.size, r.warned, m.auth
         FROM recipients r JOIN messages m ON m.id = r.message_id";

fn claim(c: &Connection, now: i64, limit: usize) -> rusqlite::Result<Vec<Job>> {
    let mut stmt = c.prepare_cached(&format!(
        "{CLAIM_COLUMNS}
         WHERE r.status = 0 AND r.claimed = 0 AND r.held = 0 AND r.next_attempt <= ?1
         ORDER BY r.next_attempt LIMIT ?2"
    ))?;
    claim_rows(c, stmt.query(params![now, limit as i64])?)
}

fn claim_message(c: &Connection, id: &str) -> rusqlite::Result<Vec<Job>> {
    let mut stmt = c.prepare_cached(&format!(
        "{CLAIM_COLUMNS} WHERE r.message_id = ?1 AND r.status = 0 AND r.claimed = 0"
    ))?;
    claim_rows(c, stmt.query([id])?)
}

/// Marks the selected recipient rows claimed and groups them into jobs.
fn claim_rows(c: &Connection, mut rows: rusqlite::Rows<'_>) -> rusqlite::Result<Vec<Job>> {
    let mut claimed = Vec::new();
    while let Some(row) = rows.next()? {
        claimed.push(ClaimedRow {
            job: Job {
                queue_id: row.get(1)?,
                domain: row.get(3)?,
                sender: row.get(6)?,
                mail_params: row.get(7)?,
                received_at_ms: row.get(8)?,
                size: row.get::<_, i64>(9)? as u64,
                recipients: Vec::new(),
                authenticated: row.get::<_, Option<i64>>(11)?.map(|v| v != 0),
            },
            recipient: Recipient {
                row: row.get(0)?,
                address: row.get(2)?,
                params: row.get(4)?,
                attempts: row.get::<_, i64>(5)? as u32,
                warned: row.get::<_, i64>(10)? != 0,
            },
        });
    }
    drop(rows);
    let mut mark = c.prepare_cached("UPDATE recipients SET claimed = 1 WHERE id = ?1")?;
    for r in &claimed {
        mark.execute([r.recipient.row])?;
    }
    Ok(into_jobs(claimed))
}

fn record(
    c: &Connection,
    id: &str,
    updates: &[Update],
    dsns: &[NewMessage],
) -> rusqlite::Result<bool> {
    for m in dsns {
        // Notifications go to the senders' domains; a held one is held when claimed.
        insert(c, m, &Held::new())?;
    }
    let mut stmt = c.prepare_cached(
        "UPDATE recipients SET status = ?1, claimed = 0, attempts = attempts + ?2,
                next_attempt = ?3, last_reply = COALESCE(?4, last_reply), warned = MAX(warned, ?7)
         WHERE id = ?5 AND message_id = ?6",
    )?;
    for u in updates {
        stmt.execute(params![
            u.status as i64,
            i64::from(u.attempted),
            u.next_attempt_ms,
            u.last_reply,
            u.row,
            id,
            i64::from(u.warned)
        ])?;
    }
    let pending: i64 = c
        .prepare_cached(PENDING_OF_MESSAGE)?
        .query_row(params![id, Status::Pending as i64], |r| r.get(0))?;
    if pending > 0 {
        return Ok(false);
    }
    c.prepare_cached("DELETE FROM recipients WHERE message_id = ?1")?
        .execute([id])?;
    let n = c
        .prepare_cached("DELETE FROM messages WHERE id = ?1")?
        .execute([id])?;
    Ok(n > 0)
}

/// A message's recipients still pending. The `+` keeps SQLite on the `message_id` index:
/// left to itself it picks `recipients_due` (status first) and counts through every pending
/// recipient in the queue, once per delivery (drains of 20,000 messages went quadratic).
const PENDING_OF_MESSAGE: &str =
    "SELECT COUNT(*) FROM recipients WHERE message_id = ?1 AND +status = ?2";

fn make_due(c: &Connection, domains: &[String], now: i64) -> rusqlite::Result<u64> {
    let mut stmt = c.prepare_cached(
        "UPDATE recipients SET next_attempt = ?1
         WHERE domain = ?2 AND status = 0 AND claimed = 0 AND held = 0",
    )?;
    let mut n = 0;
    for d in domains {
        n += stmt.execute(params![now, d])? as u64;
    }
    Ok(n)
}

fn act(c: &Connection, ids: &[String], action: Action, now: i64) -> rusqlite::Result<u64> {
    let mut n = 0;
    for id in ids {
        let changed = match action {
            Action::Flush => c
                .prepare_cached(
                    "UPDATE recipients SET next_attempt = ?2
                     WHERE message_id = ?1 AND status = 0 AND claimed = 0 AND held = 0",
                )?
                .execute(params![id, now])?,
            Action::Hold => c
                .prepare_cached(
                    "UPDATE recipients SET held = 1 WHERE message_id = ?1 AND status = 0 AND held = 0",
                )?
                .execute([id])?,
            Action::Release => c
                .prepare_cached(
                    "UPDATE recipients SET held = 0, next_attempt = ?2
                     WHERE message_id = ?1 AND status = 0 AND held = 1",
                )?
                .execute(params![id, now])?,
            Action::Delete => {
                c.prepare_cached("DELETE FROM recipients WHERE message_id = ?1")?
                    .execute([id])?;
                c.prepare_cached("DELETE FROM messages WHERE id = ?1")?
                    .execute([id])?
            }
        };
        n += u64::from(changed > 0);
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::suite;

    #[tokio::test]
    async fn conformance_lifecycle() {
        let dir = tempfile::tempdir().unwrap();
        suite::lifecycle(&Embedded::open(dir.path()).unwrap()).await;
    }

    #[test]
    fn the_pending_count_of_a_message_uses_the_message_index() {
        let dir = tempfile::tempdir().unwrap();
        drop(Embedded::open(dir.path()).unwrap());
        let c = open_connection(&dir.path().join("queue.sqlite")).unwrap();
        let plan: String = c
            .query_row(
                &format!("EXPLAIN QUERY PLAN {PENDING_OF_MESSAGE}"),
                params!["m1", 0],
                |r| r.get(3),
            )
            .unwrap();
        assert!(plan.contains("recipients_message"), "{plan}");
    }

    /// A full disk can make SQLite roll back the whole batch, not just the failing insert:
    /// every answer must still match what the file holds (no 452 for a committed message,
    /// no 250 for a lost one).
    #[test]
    fn a_batch_rolled_back_by_a_full_disk_answers_what_the_file_holds() {
        let dir = tempfile::tempdir().unwrap();
        drop(Embedded::open(dir.path()).unwrap());
        let c = open_connection(&dir.path().join("queue.sqlite")).unwrap();
        let pages: i64 = c.query_row("PRAGMA page_count", [], |r| r.get(0)).unwrap();
        c.pragma_update(None, "max_page_count", pages + 50).unwrap();
        let marker = read_identity(&c).unwrap().expect("an identity");
        let (guard, _) = guard::Guard::acquire(dir.path()).unwrap();
        let mut w = Writer {
            conn: c,
            guard,
            marker,
        };
        let mut answers = Vec::new();
        let batch = ["before", "big", "after"]
            .into_iter()
            .map(|id| {
                let mut m = suite::message(id, &[("a@x.test", "x.test")]);
                if id == "big" {
                    m.body = vec![b'x'; 1 << 20];
                }
                let (tx, rx) = oneshot::channel();
                answers.push((id, rx));
                Op::Insert(Box::new(m), tx)
            })
            .collect();
        run_batch(&mut w, batch, &mut Held::new());
        for (id, mut rx) in answers {
            let answer = rx.try_recv().expect("answered");
            let stored: i64 = w
                .conn
                .query_row("SELECT COUNT(*) FROM messages WHERE id = ?1", [id], |r| {
                    r.get(0)
                })
                .unwrap();
            assert_eq!(
                answer.is_ok(),
                stored == 1,
                "{id}: answered {answer:?}, {stored} stored"
            );
            if id == "big" {
                assert!(matches!(answer, Err(StoreError::Full)), "{answer:?}");
            }
        }
    }

    #[tokio::test]
    async fn new_mail_for_a_held_domain_waits_until_the_hold_ends_and_make_due() {
        let dir = tempfile::tempdir().unwrap();
        let s = Embedded::open(dir.path()).unwrap();
        s.hold_new_mail(vec!["x.test".into()], Some(60_000))
            .await
            .unwrap();
        s.insert(suite::message(
            "held",
            &[("a@x.test", "x.test"), ("b@y.test", "y.test")],
        ))
        .await
        .unwrap();
        let jobs = s.claim_due(2000, 100).await.unwrap();
        assert_eq!(jobs.len(), 1, "only the other domain's recipient is due");
        assert_eq!(jobs[0].domain, "y.test");
        assert_eq!(
            s.next_due().await.unwrap(),
            Some(61_000),
            "due after the hold"
        );
        // The primary is back: the hold ends, then make_due (the probe's order).
        s.hold_new_mail(vec!["x.test".into()], None).await.unwrap();
        s.insert(suite::message("after", &[("c@x.test", "x.test")]))
            .await
            .unwrap();
        assert_eq!(s.make_due(vec!["x.test".into()], 2000).await.unwrap(), 2);
        let due: Vec<String> = s
            .claim_due(2000, 100)
            .await
            .unwrap()
            .into_iter()
            .map(|j| j.queue_id)
            .collect();
        assert_eq!(due, ["after", "held"]);
    }

    #[tokio::test]
    async fn conformance_operator_actions() {
        let dir = tempfile::tempdir().unwrap();
        suite::operator_actions(&Embedded::open(dir.path()).unwrap()).await;
    }

    #[tokio::test]
    async fn conformance_outages() {
        let dir = tempfile::tempdir().unwrap();
        suite::outages(&Embedded::open(dir.path()).unwrap()).await;
    }

    #[tokio::test]
    async fn conformance_cache() {
        let dir = tempfile::tempdir().unwrap();
        suite::cache(&Embedded::open(dir.path()).unwrap()).await;
    }

    #[tokio::test]
    async fn claims_are_released_on_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = Embedded::open(dir.path()).unwrap();
            s.insert(suite::message("m1", &[("a@x.test", "x.test")]))
                .await
                .unwrap();
            assert_eq!(s.claim_due(2000, 10).await.unwrap().len(), 1);
        }
        let s = Embedded::open(dir.path()).unwrap();
        assert_eq!(s.claim_due(2000, 10).await.unwrap().len(), 1);
    }

    #[tokio::test]
    async fn concurrent_inserts_share_commits() {
        let dir = tempfile::tempdir().unwrap();
        let s = Arc::new(Embedded::open(dir.path()).unwrap());
        let mut tasks = Vec::new();
        for i in 0..200 {
            let s = s.clone();
            tasks.push(tokio::spawn(async move {
                s.insert(suite::message(&format!("m{i}"), &[("a@x.test", "x.test")]))
                    .await
            }));
        }
        for t in tasks {
            t.await.unwrap().unwrap();
        }
        assert_eq!(s.stats().await.unwrap().messages, 200);
        let commits = s.commits();
        println!("200 concurrent inserts took {commits} commits");
        assert!(
            commits < 200,
            "every insert got its own commit: group commit is not working"
        );
    }
}
