//! The embedded queue's guard: the file `queue.marker` beside `queue.sqlite`, which records
//! the queue's identity and the last commit the store acknowledged, and is locked by the one
//! process that uses the queue.
//!
//! SQLite, given a damaged write-ahead log, silently drops the frames it cannot verify, and
//! given an empty database file it deletes the log: either way the queue opens with less than
//! it held, and mail that got a `250` is gone without a word. The marker lives outside the
//! database, so it survives both. Before SQLite opens anything, [`Guard::acquire`] checks
//! the files against it and refuses a queue that holds less than was acknowledged, with a
//! message that says how to recover. It owns only these checks and the marker: never the
//! queue's tables.
//!
//! The marker is rewritten in place (fixed length, no sync) after every commit. A write the
//! kernel never made durable (power loss) leaves the marker behind the database, never
//! ahead of it: the check only ever refuses a file that is behind the marker.

use super::super::StoreError;
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

pub const DB_FILE: &str = "queue.sqlite";
pub const MARKER_FILE: &str = "queue.marker";
/// The files that make up the queue (SQLite's log and shared index beside the database).
pub const QUEUE_FILES: [&str; 4] = [DB_FILE, "queue.sqlite-wal", "queue.sqlite-shm", MARKER_FILE];

/// What the marker records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Marker {
    pub queue_id: String,
    pub commits: u64,
}

impl Marker {
    /// The marker's text; always the same length for one queue id, so that an update
    /// overwrites it in place.
    fn render(&self) -> String {
        format!(
            "# mx2 queue marker: the identity of queue.sqlite and its last acknowledged commit.\n\
             # mx2 refuses to start when queue.sqlite holds less than this. Do not edit or delete:\n\
             # after restoring a backup run `mx2 queue adopt` (README, \"Backup and recovery\").\n\
             queue_id {}\ncommits {:020}\n",
            self.queue_id, self.commits
        )
    }

    fn parse(text: &str) -> Option<Marker> {
        let mut queue_id = None;
        let mut commits = None;
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            match line.split_once(' ') {
                Some(("queue_id", v)) if !v.trim().is_empty() => queue_id = Some(v.trim()),
                Some(("commits", v)) => commits = v.trim().parse().ok(),
                _ => {}
            }
        }
        Some(Marker {
            queue_id: queue_id?.to_string(),
            commits: commits?,
        })
    }
}

/// How to get out of a refusal; the same for every kind of damage.
pub fn recovery_help(dir: &Path) -> String {
    let d = dir.display();
    format!(
        "mx2 will not start on a queue that lost mail it acknowledged. To recover:\n  \
         1. keep a copy of the directory as it is now: cp -a {d} {d}.damaged\n  \
         2. restore the latest backup of queue.sqlite (README, \"Backup and recovery\") or \
         salvage what SQLite can still read (sqlite3 {d}/queue.sqlite .recover | sqlite3 \
         recovered.sqlite, then move recovered.sqlite to {d}/queue.sqlite), then run \
         `mx2 queue adopt --config FILE` to accept that file as the queue;\n  \
         3. or start with an empty queue: `mx2 queue reset --i-understand --config FILE` \
         (moves the damaged files aside; the mail in them is then lost to mx2)."
    )
}

/// The lock on the queue and its marker, held while the store is open.
pub struct Guard {
    file: File,
    dir: PathBuf,
}

/// What the files looked like before SQLite opened them.
pub enum Found {
    /// No queue here yet: a new one may be created.
    New,
    /// A database file with content, and the marker if there is one (a queue written by an
    /// mx2 without markers has none).
    Existing(Option<Marker>),
}

fn len(path: &Path) -> Option<u64> {
    std::fs::metadata(path).ok().map(|m| m.len())
}

fn damaged(dir: &Path, what: String) -> StoreError {
    StoreError::Damaged(format!(
        "the queue in {} is damaged: {what}\n{}",
        dir.display(),
        recovery_help(dir)
    ))
}

impl Guard {
    /// Opens (creating) and locks the marker in `dir`, then judges the files before anything
    /// else touches them. Fails when another process holds the queue, or when the files show
    /// that a queue was here and its database is gone or empty.
    pub fn acquire(dir: &Path) -> Result<(Guard, Found), StoreError> {
        let (guard, text) = Self::lock(dir)?;
        let marker = if text.is_empty() {
            None
        } else {
            Some(parse_marker(dir, &text)?)
        };
        let found = judge(dir, marker)?;
        Ok((guard, found))
    }

    /// The lock alone, whatever the files look like (for the commands that repair them).
    pub fn lock_only(dir: &Path) -> Result<Guard, StoreError> {
        Self::lock(dir).map(|(g, _)| g)
    }

    /// Opens (creating) and locks the marker; returns its text.
    fn lock(dir: &Path) -> Result<(Guard, String), StoreError> {
        let path = dir.join(MARKER_FILE);
        let io = |e: std::io::Error| StoreError::Backend(format!("{}: {e}", path.display()));
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(StoreError::Backend(format!(
                    "another process is using the queue in {} ({} is locked): stop the other \
                     mx2 first, or give this one its own state_dir",
                    dir.display(),
                    path.display()
                )));
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(io(e)),
        }
        let text = read_bounded(&mut file).map_err(io)?;
        let guard = Guard {
            file,
            dir: dir.to_path_buf(),
        };
        Ok((guard, text))
    }

    /// Records a commit. Not synced: see the module comment. A failure is logged, never
    /// passed on (the commit itself stands).
    pub fn record(&self, marker: &Marker) {
        if let Err(e) = self.file.write_at(marker.render().as_bytes(), 0) {
            tracing::warn!(error = %e, file = %self.dir.join(MARKER_FILE).display(), "cannot update the queue marker");
        }
    }

    /// Writes the marker and makes it durable (at open, and when a queue is adopted).
    pub fn store(&self, marker: &Marker) -> Result<(), StoreError> {
        let io = |e: std::io::Error| {
            StoreError::Backend(format!("{}: {e}", self.dir.join(MARKER_FILE).display()))
        };
        let text = marker.render();
        self.file.set_len(0).map_err(io)?;
        self.file.write_at(text.as_bytes(), 0).map_err(io)?;
        self.file.sync_all().map_err(io)?;
        File::open(&self.dir).and_then(|d| d.sync_all()).map_err(io)
    }
}

/// Compares what the database holds (its `meta` row, read before anything writes) with
/// the marker. `None`: the database has no identity yet (new, or written by an older mx2).
pub fn verify(dir: &Path, marker: &Marker, in_db: Option<&Marker>) -> Result<(), StoreError> {
    let Some(db) = in_db else {
        return Err(damaged(
            dir,
            format!(
                "{DB_FILE} has no queue identity, but {MARKER_FILE} records queue {} at \
                 commit {}: the write-ahead log queue.sqlite-wal is damaged or was removed, or \
                 the file was replaced by another one",
                marker.queue_id, marker.commits
            ),
        ));
    };
    if db.queue_id != marker.queue_id {
        return Err(damaged(
            dir,
            format!(
                "{DB_FILE} is queue {}, but {MARKER_FILE} records queue {}: the file was \
                 replaced by another one",
                db.queue_id, marker.queue_id
            ),
        ));
    }
    if db.commits < marker.commits {
        return Err(damaged(
            dir,
            format!(
                "{DB_FILE} holds the queue as of commit {}, but mx2 acknowledged commits up \
                 to {} ({MARKER_FILE}): the write-ahead log queue.sqlite-wal is damaged or \
                 was removed, and what up to {} commits stored is not in the file",
                db.commits,
                marker.commits,
                marker.commits - db.commits
            ),
        ));
    }
    Ok(())
}

/// Judges the files in `dir` against the marker, touching nothing.
fn judge(dir: &Path, marker: Option<Marker>) -> Result<Found, StoreError> {
    let db = len(&dir.join(DB_FILE)).unwrap_or(0);
    let wal = len(&dir.join("queue.sqlite-wal")).unwrap_or(0);
    if db > 0 {
        return Ok(Found::Existing(marker));
    }
    let state = if dir.join(DB_FILE).exists() {
        "is empty (0 bytes)"
    } else {
        "is missing"
    };
    match marker {
        Some(m) if m.commits > 0 => Err(damaged(
            dir,
            format!(
                "{DB_FILE} {state}, but {MARKER_FILE} records a queue with {} commits \
                 (queue id {})",
                m.commits, m.queue_id
            ),
        )),
        // SQLite deletes the log of an empty database: never let it.
        _ if wal > 0 => Err(damaged(
            dir,
            format!(
                "{DB_FILE} {state}, but its write-ahead log queue.sqlite-wal holds {wal} bytes"
            ),
        )),
        _ => Ok(Found::New),
    }
}

/// The same judgement without taking the lock, for a reader beside the running server (the
/// CLI reading the file): the marker as it is now, and what the files look like.
pub fn inspect(dir: &Path) -> Result<Found, StoreError> {
    let marker = match read_marker_file(dir) {
        Some(t) if !t.is_empty() => Some(parse_marker(dir, &t)?),
        _ => None,
    };
    judge(dir, marker)
}

/// A marker is a few hundred bytes; anything past this is not one (and is not read).
const MARKER_MAX: u64 = 4096;

fn read_bounded(file: &mut File) -> std::io::Result<String> {
    let mut bytes = Vec::new();
    file.take(MARKER_MAX).read_to_end(&mut bytes)?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// The marker's text in `dir`, if the file can be opened.
fn read_marker_file(dir: &Path) -> Option<String> {
    let mut file = File::open(dir.join(MARKER_FILE)).ok()?;
    read_bounded(&mut file).ok()
}

fn parse_marker(dir: &Path, text: &str) -> Result<Marker, StoreError> {
    Marker::parse(text).ok_or_else(|| {
        damaged(
            dir,
            format!(
                "{} cannot be read (it should name the queue and its last commit)",
                dir.join(MARKER_FILE).display()
            ),
        )
    })
}

/// The queue id its marker in `dir` records, if it can be read: the identity the admin API
/// reports and the command line compares (paths can differ between the two).
pub fn queue_id(dir: &Path) -> Option<String> {
    Marker::parse(&read_marker_file(dir)?).map(|m| m.queue_id)
}

/// Copies the queue's files into a new folder `damaged-<time>` in `dir`; returns the folder.
pub fn copy_aside(dir: &Path) -> Result<PathBuf, String> {
    let to = aside_dir(dir)?;
    for name in QUEUE_FILES {
        let from = dir.join(name);
        if from.exists() {
            std::fs::copy(&from, to.join(name))
                .map_err(|e| format!("cannot copy {}: {e}", from.display()))?;
        }
    }
    Ok(to)
}

/// A new folder for files set aside: `damaged-<unix time>` (with a suffix if taken).
fn aside_dir(dir: &Path) -> Result<PathBuf, String> {
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let mut n = 0;
    loop {
        let name = match n {
            0 => format!("damaged-{stamp}"),
            _ => format!("damaged-{stamp}-{n}"),
        };
        let to = dir.join(name);
        match std::fs::create_dir(&to) {
            Ok(()) => return Ok(to),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && n < 100 => n += 1,
            Err(e) => return Err(format!("{}: {e}", to.display())),
        }
    }
}

/// Moves the queue's files into a new folder `damaged-<time>` in `dir` (never deletes them).
/// Returns the folder and the files moved.
pub fn move_aside(dir: &Path) -> Result<(PathBuf, Vec<String>), String> {
    let to = aside_dir(dir)?;
    let mut moved = Vec::new();
    for name in QUEUE_FILES {
        let from = dir.join(name);
        if from.exists() {
            std::fs::rename(&from, to.join(name))
                .map_err(|e| format!("cannot move {}: {e}", from.display()))?;
            moved.push(name.to_string());
        }
    }
    Ok((to, moved))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_marker_reads_back_and_keeps_its_length() {
        let m = Marker {
            queue_id: "0190-abc".into(),
            commits: 7,
        };
        assert_eq!(Marker::parse(&m.render()), Some(m.clone()));
        let later = Marker {
            commits: 123_456,
            ..m.clone()
        };
        assert_eq!(m.render().len(), later.render().len());
        assert_eq!(Marker::parse("garbage"), None);
    }

    #[test]
    fn an_empty_database_with_a_log_or_a_marker_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (g, found) = Guard::acquire(dir.path()).unwrap();
        assert!(matches!(found, Found::New));
        g.store(&Marker {
            queue_id: "q".into(),
            commits: 3,
        })
        .unwrap();
        drop(g);
        std::fs::write(dir.path().join(DB_FILE), b"").unwrap();
        let Err(StoreError::Damaged(e)) = Guard::acquire(dir.path()) else {
            panic!("an empty database under a marker must be refused");
        };
        assert!(
            e.contains("is empty (0 bytes)") && e.contains("3 commits"),
            "{e}"
        );
        assert!(e.contains("mx2 queue reset --i-understand"), "{e}");

        std::fs::remove_file(dir.path().join(MARKER_FILE)).unwrap();
        std::fs::write(dir.path().join("queue.sqlite-wal"), b"frames").unwrap();
        assert!(matches!(
            Guard::acquire(dir.path()),
            Err(StoreError::Damaged(_))
        ));
    }

    #[test]
    fn a_database_behind_its_marker_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let g = |marker: &Marker, db: Option<&Marker>| verify(dir.path(), marker, db);
        let m = |id: &str, commits| Marker {
            queue_id: id.into(),
            commits,
        };
        assert!(g(&m("q", 5), Some(&m("q", 5))).is_ok());
        assert!(g(&m("q", 5), Some(&m("q", 9))).is_ok());
        let Err(StoreError::Damaged(e)) = g(&m("q", 9), Some(&m("q", 5))) else {
            panic!("behind");
        };
        assert!(e.contains("as of commit 5") && e.contains("up to 9"), "{e}");
        assert!(g(&m("q", 1), Some(&m("other", 5))).is_err());
        assert!(g(&m("q", 1), None).is_err());
    }

    #[test]
    fn one_process_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let held = Guard::acquire(dir.path()).unwrap();
        let Err(StoreError::Backend(e)) = Guard::acquire(dir.path()) else {
            panic!("second lock");
        };
        assert!(e.contains("another process is using the queue"), "{e}");
        drop(held);
        assert!(Guard::acquire(dir.path()).is_ok());
    }
}
