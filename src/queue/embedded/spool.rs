//! Spooled content in the embedded store: a large message's row keeps its trace headers in
//! `messages.body` and names, in `spooled`, the spool file with the rest
//! (`state_dir/spool/ID`, see [`crate::queue::spool`]). Owns that table, the check at start
//! (files no committed row refers to are removed; rows whose file is missing are reported
//! as queue damage), the removal of a file once its row's deletion is committed, and reading
//! the content back as a stream.
//!
//! A file is removed only after the transaction that deleted its message committed: a
//! temporary trigger on the writer's connection notes the message in `temp.spool_gone`
//! inside that transaction (so a rollback forgets it too), and the writer calls [`sweep`]
//! after each commit. A crash in between leaves a file with no row, removed at the next start.

use super::writer::Held;
use crate::queue::body::{BodyReader, FileRange};
use crate::queue::spool::{self, Spooled};
use crate::queue::{NewMessage, StoreError};
use rusqlite::{Connection, OptionalExtension, params};
use std::path::{Path, PathBuf};
use tracing::{error, info, warn};

pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS spooled (
    id TEXT PRIMARY KEY,
    len INTEGER NOT NULL,
    dot_free INTEGER NOT NULL DEFAULT 0
);
";

/// `dot_free` (1: no line of the file starts with a dot, so it goes on the wire as it is)
/// came after the table: a queue written before has it added, 0 for the rows it holds.
fn add_dot_free(c: &Connection) -> rusqlite::Result<()> {
    let has: i64 = c.query_row(
        "SELECT COUNT(*) FROM pragma_table_info('spooled') WHERE name = 'dot_free'",
        [],
        |r| r.get(0),
    )?;
    if has == 0 {
        c.execute_batch("ALTER TABLE spooled ADD COLUMN dot_free INTEGER NOT NULL DEFAULT 0")?;
    }
    Ok(())
}

/// On the writer's connection only: notes the spooled messages a transaction deletes.
const WRITER_SCHEMA: &str = "
CREATE TEMP TABLE IF NOT EXISTS spool_gone (id TEXT PRIMARY KEY);
CREATE TEMP TRIGGER IF NOT EXISTS spool_gone_on_delete AFTER DELETE ON main.messages
WHEN EXISTS (SELECT 1 FROM spooled WHERE id = old.id)
BEGIN
    DELETE FROM spooled WHERE id = old.id;
    INSERT OR IGNORE INTO spool_gone (id) VALUES (old.id);
END;
";

/// The spool folder of the queue whose database `c` is.
fn folder(c: &Connection) -> Option<PathBuf> {
    c.path()
        .filter(|p| !p.is_empty())
        .and_then(|p| Path::new(p).parent())
        .map(spool::dir)
}

/// At start, on the writer's connection: the table, the trigger, and the check of the spool
/// folder against the committed rows. Returns how many rows have lost their file (each one
/// already logged as queue damage).
pub(super) fn prepare(c: &Connection, state_dir: &Path) -> Result<u64, StoreError> {
    c.execute_batch(SCHEMA).map_err(super::backend)?;
    add_dot_free(c).map_err(super::backend)?;
    c.execute_batch(WRITER_SCHEMA).map_err(super::backend)?;
    let dir = spool::dir(state_dir);
    std::fs::create_dir_all(&dir).map_err(|e| {
        StoreError::Backend(format!(
            "cannot create the spool folder {}: {e}",
            dir.display()
        ))
    })?;
    let mut rows = std::collections::HashMap::new();
    {
        let mut st = c
            .prepare("SELECT id, len FROM spooled")
            .map_err(super::backend)?;
        let it = st
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))
            .map_err(super::backend)?;
        for row in it {
            let (id, len) = row.map_err(super::backend)?;
            rows.insert(id, len.max(0) as u64);
        }
    }
    let entries = std::fs::read_dir(&dir).map_err(|e| {
        StoreError::Backend(format!(
            "cannot read the spool folder {}: {e}",
            dir.display()
        ))
    })?;
    let mut orphans = 0;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !rows.contains_key(&name) {
            // Content of a message never committed (the sender was not told 250), or of
            // one whose deletion committed just before a crash.
            match std::fs::remove_file(entry.path()) {
                Ok(()) => orphans += 1,
                Err(e) => {
                    warn!(file = %entry.path().display(), error = %e, "cannot remove a spool file no message refers to")
                }
            }
        }
    }
    if orphans > 0 {
        info!(files = orphans, folder = %dir.display(), "removed spool files of messages never committed");
    }
    let mut damaged = 0;
    for (id, len) in &rows {
        let path = dir.join(id);
        let found = std::fs::metadata(&path).map(|m| m.len());
        if found.as_ref().map_or(true, |&n| n < *len) {
            damaged += 1;
            error!(
                queue_id = %id,
                file = %path.display(),
                expected_bytes = len,
                found = ?found.map_err(|e| e.to_string()),
                "QUEUE DAMAGE: the content file of a queued message is missing or short; \
                 the message cannot be delivered and stays queued until it expires (its \
                 sender is then notified). Restore the file from a backup if you have one."
            );
        }
    }
    Ok(damaged)
}

/// Inserts a message whose content continues in the spool file `s` (inside the writer's
/// transaction): the row, the file's entry, and the size counting both.
pub(super) fn insert(
    c: &Connection,
    m: &NewMessage,
    s: &Spooled,
    held: &Held,
) -> rusqlite::Result<()> {
    super::ops::insert(c, m, held)?;
    c.prepare_cached("INSERT INTO spooled (id, len, dot_free) VALUES (?1, ?2, ?3)")?
        .execute(params![m.id, s.len as i64, s.dot_free])?;
    c.prepare_cached("UPDATE messages SET size = size + ?2 WHERE id = ?1")?
        .execute(params![m.id, s.len as i64])?;
    Ok(())
}

/// After a commit: hands the files of the spooled messages it deleted to `remover`.
pub(super) fn sweep(c: &Connection, remover: &Remover) {
    let gone: Vec<String> = match c
        .prepare_cached("SELECT id FROM spool_gone")
        .and_then(|mut st| st.query_map([], |r| r.get(0))?.collect())
    {
        Ok(g) => g,
        Err(e) => {
            warn!(error = %e, "cannot list the spool files to remove (they go at the next start)");
            return;
        }
    };
    if gone.is_empty() {
        return;
    }
    if let Some(dir) = folder(c) {
        for id in &gone {
            remover.remove(dir.join(id));
        }
    }
    if let Err(e) = c.execute("DELETE FROM spool_gone", []) {
        warn!(error = %e, "cannot clear the list of removed spool files");
    }
}

/// Removes the spool files of deleted messages on a thread of its own. Unlinking a large
/// file is slow (~14 ms for 50 MB on these machines' ext4, one at a time whatever the
/// number of threads): on the writer thread it held up every commit, and with them every
/// delivery waiting to hear its message was recorded, capping a drain of 50 MB messages
/// at ~50 a second. A removal lost to a stop or a crash happens at the next start (a file
/// no row refers to). Without the thread (it could not start), files go at once.
pub(super) struct Remover {
    to_remove: Option<std::sync::mpsc::Sender<PathBuf>>,
}

impl Remover {
    pub(super) fn start() -> Self {
        let (tx, rx) = std::sync::mpsc::channel::<PathBuf>();
        let started = std::thread::Builder::new()
            .name("mx2-spool-remove".into())
            .spawn(move || {
                for path in rx {
                    remove_now(&path);
                }
            });
        match started {
            Ok(_) => Self {
                to_remove: Some(tx),
            },
            Err(e) => {
                warn!(error = %e, "cannot start the spool file remover; files are removed by the writer");
                Self { to_remove: None }
            }
        }
    }

    /// Removes `path` soon (now, without the thread).
    pub(super) fn remove(&self, path: PathBuf) {
        match &self.to_remove {
            Some(tx) => {
                if let Err(e) = tx.send(path) {
                    remove_now(&e.0);
                }
            }
            None => remove_now(&path),
        }
    }
}

/// How much of a large file one step gives back before it is unlinked (see [`remove_now`]).
const SHRINK_STEP: u64 = 1 << 20;

/// Removes the file at `path`. A large file is first shrunk from its end one
/// [`SHRINK_STEP`] at a time: freeing 50 MB in one unlink held the filesystem's journal for
/// ~14 ms, and every commit's `fsync` waited that long; in steps, they wait under 1 ms.
/// The file's message is already deleted, so what is left of it after a crash is nobody's
/// and goes at the next start.
fn remove_now(path: &Path) {
    let shrunk = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .and_then(|f| {
            let mut len = f.metadata()?.len();
            while len > SHRINK_STEP {
                len -= SHRINK_STEP;
                f.set_len(len)?;
            }
            Ok(())
        });
    let removed = match shrunk {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
        _ => std::fs::remove_file(path),
    };
    match removed {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            warn!(file = %path.display(), error = %e, "cannot remove the spool file of a deleted message (it goes at the next start)")
        }
    }
}

/// Where a message's content continues: its spool file's length, and whether no line of
/// the file starts with a dot.
#[derive(Debug, Clone, Copy)]
pub(super) struct FileTail {
    pub len: u64,
    pub dot_free: bool,
}

/// A message's stored head (`messages.body`) and, when its content continues in a spool
/// file, that file's length. None: no such message.
pub(super) fn head(c: &Connection, id: &str) -> rusqlite::Result<Option<(Vec<u8>, Option<u64>)>> {
    c.prepare_cached(
        "SELECT m.body, s.len FROM messages m LEFT JOIN spooled s ON s.id = m.id WHERE m.id = ?1",
    )?
    .query_row([id], |r| {
        Ok((
            r.get(0)?,
            r.get::<_, Option<i64>>(1)?.map(|n| n.max(0) as u64),
        ))
    })
    .optional()
}

/// [`head`], with whether the spool file is free of dot lines (a queue the server has
/// opened: older ones lack the column until then, which offline readers do not need).
pub(super) fn head_for_delivery(
    c: &Connection,
    id: &str,
) -> rusqlite::Result<Option<(Vec<u8>, Option<FileTail>)>> {
    let Some((head, len)) = self::head(c, id)? else {
        return Ok(None);
    };
    let Some(len) = len else {
        return Ok(Some((head, None)));
    };
    let dot_free = c
        .prepare_cached("SELECT dot_free FROM spooled WHERE id = ?1")?
        .query_row([id], |r| r.get::<_, bool>(0))
        .optional()?
        .unwrap_or(false);
    Ok(Some((head, Some(FileTail { len, dot_free }))))
}

/// The spool file of message `id`, checked against the length its row recorded.
async fn open(state_dir: &Path, id: &str, len: u64) -> Result<std::fs::File, StoreError> {
    let path = spool::dir(state_dir).join(id);
    let damaged = |why: String| {
        error!(queue_id = %id, file = %path.display(), "QUEUE DAMAGE: {why}");
        StoreError::Damaged(format!(
            "queue damage: the content of message {id} ({}) {why}",
            path.display()
        ))
    };
    let file = tokio::fs::File::open(&path)
        .await
        .map_err(|e| damaged(format!("cannot be read: {e}")))?;
    let found = file
        .metadata()
        .await
        .map_err(|e| damaged(format!("cannot be read: {e}")))?
        .len();
    if found < len {
        return Err(damaged(format!("holds {found} bytes of {len}")));
    }
    // Read from start to end once: a larger read-ahead (a hint; nothing depends on it).
    let _ = rustix::fs::fadvise(&file, 0, None, rustix::fs::Advice::Sequential);
    Ok(file.into_std().await)
}

/// The content of a message read from its head and, if it has one, its spool file.
pub(super) async fn reader(
    state_dir: &Path,
    id: &str,
    head: Vec<u8>,
    tail: Option<FileTail>,
) -> Result<BodyReader, StoreError> {
    let Some(tail) = tail else {
        return Ok(BodyReader::from_vec(head));
    };
    let file = open(state_dir, id, tail.len).await?;
    Ok(BodyReader::from_file(
        head,
        FileRange::new(std::sync::Arc::new(file), 0, tail.len, tail.dot_free),
    ))
}

/// The whole content, in memory (operators' export on the file, small messages, tests).
pub(super) fn whole(
    state_dir: &Path,
    id: &str,
    mut head: Vec<u8>,
    len: Option<u64>,
) -> Result<Vec<u8>, StoreError> {
    if len.is_some() {
        let path = spool::dir(state_dir).join(id);
        let rest = std::fs::read(&path).map_err(|e| {
            StoreError::Damaged(format!(
                "queue damage: the content of message {id} ({}) cannot be read: {e}",
                path.display()
            ))
        })?;
        head.extend_from_slice(&rest);
    }
    Ok(head)
}

/// Whether a queue file has the table (one written by an older mx2 does not).
pub(super) fn has_table(c: &Connection) -> rusqlite::Result<bool> {
    c.query_row(
        "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = 'spooled'",
        [],
        |r| r.get::<_, i64>(0),
    )
    .map(|n| n > 0)
}

#[cfg(test)]
mod tests {
    use super::super::Embedded;
    use crate::queue::spool::Spool;
    use crate::queue::{OperatorAction, Store, StoreError, suite};
    use rusqlite::Connection;

    async fn spooled(store: &Embedded, dir: &std::path::Path, id: &str, content: &[u8]) {
        let mut w = Spool::new(dir).create(&id.to_string()).await.unwrap();
        w.write(content).await.unwrap();
        let s = w.finish().await.unwrap();
        let mut m = suite::message(id, &[("a@x.test", "x.test")]);
        m.body = b"Received: by test\r\n".to_vec();
        store.insert_spooled(m, s).await.unwrap();
    }

    async fn read_all(store: &Embedded, id: &str) -> Result<Vec<u8>, StoreError> {
        let mut r = store.body_reader(id).await?;
        let (mut all, mut buf) = (Vec::new(), Vec::new());
        while r
            .next_chunk(&mut buf)
            .await
            .map_err(|e| StoreError::Backend(e.to_string()))?
        {
            all.extend_from_slice(&buf);
        }
        assert_eq!(all.len() as u64, r.size);
        Ok(all)
    }

    #[tokio::test]
    async fn spooled_content_reads_back_after_its_head_and_goes_with_its_message() {
        let dir = tempfile::tempdir().unwrap();
        let store = Embedded::open(dir.path()).unwrap();
        let content = vec![b'y'; 300_000];
        spooled(&store, dir.path(), "m1", &content).await;
        let mut expected = b"Received: by test\r\n".to_vec();
        expected.extend_from_slice(&content);
        assert_eq!(read_all(&store, "m1").await.unwrap(), expected);
        assert_eq!(store.body("m1").await.unwrap(), expected);
        let shown = store.show("m1").await.unwrap().unwrap();
        assert_eq!(shown.size, expected.len() as u64);
        let file = dir.path().join("spool/m1");
        assert!(file.exists());
        // A small message is read through the same path.
        store
            .insert(suite::message("m2", &[("a@x.test", "x.test")]))
            .await
            .unwrap();
        assert_eq!(
            read_all(&store, "m2").await.unwrap(),
            store.body("m2").await.unwrap()
        );

        assert_eq!(
            store
                .act(vec!["m1".into()], OperatorAction::Delete, 0)
                .await
                .unwrap(),
            1
        );
        assert!(
            suite::gone_soon(&file).await,
            "the file goes once the deletion is committed"
        );
    }

    #[tokio::test]
    async fn at_start_orphans_go_and_a_missing_file_is_damage() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Embedded::open(dir.path()).unwrap();
            spooled(&store, dir.path(), "kept", b"content").await;
            spooled(&store, dir.path(), "lost", b"content").await;
        }
        std::fs::write(dir.path().join("spool/never-committed"), b"x").unwrap();
        std::fs::remove_file(dir.path().join("spool/lost")).unwrap();
        let store = Embedded::open(dir.path()).unwrap();
        assert!(!dir.path().join("spool/never-committed").exists());
        assert!(
            read_all(&store, "kept")
                .await
                .unwrap()
                .ends_with(b"content")
        );
        assert!(matches!(
            read_all(&store, "lost").await,
            Err(StoreError::Damaged(_))
        ));
        assert!(
            store.show("lost").await.unwrap().is_some(),
            "never silently dropped"
        );
    }

    #[tokio::test]
    async fn a_file_without_dot_lines_is_offered_whole_to_the_kernel() {
        let dir = tempfile::tempdir().unwrap();
        let store = Embedded::open(dir.path()).unwrap();
        spooled(&store, dir.path(), "plain", b"a.b\r\nc\r\n").await;
        spooled(&store, dir.path(), "dots", b"a\r\n.b\r\n").await;
        let mut r = store.body_reader("plain").await.unwrap();
        let (head, file) = r.take_dot_free_file().expect("dot-free");
        assert_eq!(head, b"Received: by test\r\n");
        assert_eq!((file.offset, file.len), (0, 8));
        assert_eq!(file.last_bytes().await.unwrap(), b"\r\n");
        let mut r = store.body_reader("dots").await.unwrap();
        assert!(r.take_dot_free_file().is_none(), "needs stuffing");
        // Once a chunk was read, the rest is not offered.
        let mut r = store.body_reader("plain").await.unwrap();
        r.next_chunk(&mut Vec::new()).await.unwrap();
        assert!(r.take_dot_free_file().is_none());
    }

    #[tokio::test]
    async fn a_queue_from_before_dot_free_gets_the_column_and_stuffs_its_files() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Embedded::open(dir.path()).unwrap();
            spooled(&store, dir.path(), "old", b"no dots\r\n").await;
        }
        let db = dir.path().join(super::super::guard::DB_FILE);
        {
            let c = Connection::open(&db).unwrap();
            c.execute_batch("ALTER TABLE spooled DROP COLUMN dot_free")
                .unwrap();
        }
        let store = Embedded::open(dir.path()).unwrap();
        let mut r = store.body_reader("old").await.unwrap();
        assert!(
            r.take_dot_free_file().is_none(),
            "unknown: stuffed, as before"
        );
        assert_eq!(
            read_all(&store, "old").await.unwrap(),
            b"Received: by test\r\nno dots\r\n"
        );
        spooled(&store, dir.path(), "new", b"no dots\r\n").await;
        let mut r = store.body_reader("new").await.unwrap();
        assert!(r.take_dot_free_file().is_some());
    }

    #[tokio::test]
    async fn a_refused_insert_leaves_no_file() {
        let dir = tempfile::tempdir().unwrap();
        let store = Embedded::open(dir.path()).unwrap();
        spooled(&store, dir.path(), "m1", b"first").await;
        // The same id again: the insert fails, and the second file is removed.
        let mut w = Spool::new(dir.path())
            .create(&"m9".to_string())
            .await
            .unwrap();
        w.write(b"x").await.unwrap();
        let s = w.finish().await.unwrap();
        let m = suite::message("m1", &[("a@x.test", "x.test")]);
        assert!(store.insert_spooled(m, s).await.is_err());
        assert!(!dir.path().join("spool/m9").exists());
        assert!(dir.path().join("spool/m1").exists());
    }
}
