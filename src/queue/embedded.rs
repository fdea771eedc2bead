//! The embedded store: one SQLite file in `state_dir` (WAL, `synchronous=FULL`), laid out as
//! the PostgreSQL store is: `schema` (the file, its tables and identity), `writer` (the one
//! thread that commits, in groups) running `ops` (the statements), `inspect` (operators'
//! reads, also used by the command line on the file directly), `guard` (the marker that
//! refuses a damaged queue), `recover` (adopt, reset) and `outages` (primary health).
//! Reads use connections of their own, never the writer's.

pub mod guard;
pub mod inspect;
mod ops;
mod outages;
mod recover;
mod schema;
mod writer;

pub use recover::{Adopted, adopt, reset};
pub(crate) use schema::{identity, migrate};

use super::{
    Depth, Filter, Job, Listed, NewMessage, OperatorAction, OutageChange, RouteOutages, Shown,
    Stats, Store, StoreError, StoreFuture, Update,
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
    path: PathBuf,
}

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

    fn act(&self, ids: Vec<String>, action: OperatorAction, now_ms: i64) -> StoreFuture<'_, u64> {
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

    // STUB(registry): replaced by the real implementation on the store branch.
    fn registry(&self) -> StoreFuture<'_, Vec<super::registry::Entry>> {
        Box::pin(async { Err(StoreError::Backend("registry: not implemented".into())) })
    }
    fn registry_version(&self) -> StoreFuture<'_, i64> {
        Box::pin(async { Err(StoreError::Backend("registry: not implemented".into())) })
    }
    fn registry_put(
        &self,
        _kind: &str,
        _name: &str,
        _value: String,
        _expect: super::registry::Expect,
    ) -> StoreFuture<'_, super::registry::Written> {
        Box::pin(async { Err(StoreError::Backend("registry: not implemented".into())) })
    }
    fn registry_delete(
        &self,
        _kind: &str,
        _name: &str,
        _rev: Option<i64>,
    ) -> StoreFuture<'_, bool> {
        Box::pin(async { Err(StoreError::Backend("registry: not implemented".into())) })
    }
    fn watch_registry(&self, _changed: std::sync::Arc<tokio::sync::Notify>) {}
    fn purge_domain(&self, _domain: &str) -> StoreFuture<'_, u64> {
        Box::pin(async { Err(StoreError::Backend("registry: not implemented".into())) })
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

#[cfg(test)]
mod tests {
    use super::ops::PENDING_OF_MESSAGE;
    use super::schema::read_identity;
    use super::writer::{Held, run_batch};
    use super::*;
    use crate::queue::suite;
    use rusqlite::params;

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
