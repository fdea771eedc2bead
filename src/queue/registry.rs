//! What the store keeps besides mail: the *registry* of domains and tenants managed at run
//! time (`mx2 domain …`, `mx2 tenant …`). The store only keeps named entries of a kind as
//! opaque text with a revision; what an entry means is `crate::registry`'s business. Every
//! change takes the next number of one sequence, so a node that knows the sequence's last
//! number knows whether anything changed (the polling fallback of change notifications).

/// One stored entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// What it is: `domain`, `tenant`.
    pub kind: String,
    /// Its name, unique within its kind.
    pub name: String,
    /// Its content (JSON), as `crate::registry` wrote it.
    pub value: String,
    /// The sequence number of the change that wrote it.
    pub rev: i64,
}

/// What a write expects to find, so that two operators changing one entry at once cannot
/// overwrite each other's change unseen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// The entry must not exist (adding).
    Absent,
    /// The entry must exist with this revision (read, change, write).
    Rev(i64),
}

/// What a write did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Written {
    /// Written, with this revision.
    Done(i64),
    /// Not written: the entry was not as expected (it exists, is gone, or changed since).
    Conflict,
}
