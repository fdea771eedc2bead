//! Group commit for the PostgreSQL store: acceptances, delivery outcomes and cache entries
//! are handed to one writer task, which gathers whatever is waiting into one transaction and
//! answers every caller once it has committed. Two batches commit at once on pooled
//! connections; while they do, the next batch gathers. A large message's copy commits on its
//! own (at most `writers` transactions in all). A batch that fails is run again one write per
//! transaction, so one bad write does not fail the others.

use super::{CHANNEL, CHUNK, content, pg_error, pool_error};
use crate::queue::spool::Spooled;
use crate::queue::{NewMessage, Status, StoreError, StoreFuture, Update};
use deadpool_postgres::{Pool, Transaction};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::sync::{Semaphore, mpsc, oneshot};
use tracing::{error, trace, warn};

/// Most writes, and most content bytes, gathered into one transaction.
const MAX_BATCH: usize = 256;
const MAX_BATCH_BYTES: usize = 32 << 20;

/// A change the writer commits.
pub(super) enum Write {
    Insert(Box<NewMessage>),
    /// A message whose content is its trace headers followed by a synced spool file; the
    /// file is removed once the write is done with (committed or failed).
    InsertSpooled(Box<NewMessage>, Spooled),
    Record {
        id: String,
        updates: Vec<Update>,
        notifications: Vec<NewMessage>,
    },
    CachePut {
        key: String,
        exists: bool,
        expires_ms: i64,
    },
}

impl Write {
    fn weight(&self) -> usize {
        match self {
            Write::Insert(m) => m.body.len(),
            Write::InsertSpooled(m, s) => {
                usize::try_from(content::spooled_len(m, s)).unwrap_or(usize::MAX)
            }
            Write::Record { notifications, .. } => notifications.iter().map(|m| m.body.len()).sum(),
            Write::CachePut { .. } => 0,
        }
    }
}

/// A write and the caller waiting for it: Ok(true) when a record removed the message.
struct Queued {
    write: Write,
    reply: oneshot::Sender<Result<bool, StoreError>>,
}

#[derive(Default)]
struct Counts {
    commits: AtomicU64,
    writes: AtomicU64,
}

pub(super) struct Writer {
    tx: mpsc::UnboundedSender<Queued>,
    counts: Arc<Counts>,
}

impl Writer {
    pub(super) fn start(pool: Pool, node: String, writers: usize) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let counts = Arc::new(Counts::default());
        tokio::spawn(run(rx, pool, Arc::new(node), writers, counts.clone()));
        Self { tx, counts }
    }

    /// Hands a write over; the future resolves once it is committed (or failed).
    pub(super) fn submit(&self, write: Write) -> StoreFuture<'static, bool> {
        let (reply, done) = oneshot::channel();
        let sent = self.tx.send(Queued { write, reply });
        Box::pin(async move {
            sent.map_err(|_| StoreError::Closed)?;
            done.await.map_err(|_| StoreError::Closed)?
        })
    }

    /// (transactions committed, writes they carried)
    pub(super) fn counts(&self) -> (u64, u64) {
        (
            self.counts.commits.load(Ordering::Relaxed),
            self.counts.writes.load(Ordering::Relaxed),
        )
    }
}

/// Batches committing at once. Two: while one commits, the next gathers and runs. More
/// made the drain slower, not faster (`bench/scale` on PostgreSQL, 2 cores: 495 msg/s with
/// 8 at once, 711 with 2): each batch's statements then carried fewer writes each, and the
/// transactions competed for the same CPU. A large message's copy (`InsertSpooled`, chunk
/// by chunk) takes long, so it commits on its own, apart from the batches, and never holds
/// one of these two up.
const BATCHES_AT_ONCE: usize = 2;

/// Takes writes from the channel and commits them: batches of whatever is waiting, at most
/// [`BATCHES_AT_ONCE`] at a time, and large messages' copies one per transaction; all of
/// them together on at most `writers` connections.
async fn run(
    mut rx: mpsc::UnboundedReceiver<Queued>,
    pool: Pool,
    node: Arc<String>,
    writers: usize,
    counts: Arc<Counts>,
) {
    let slots = Arc::new(Semaphore::new(writers));
    let batches = Arc::new(Semaphore::new(BATCHES_AT_ONCE.min(writers)));
    let alone = |q: Queued| {
        let (pool, node, counts, slots) =
            (pool.clone(), node.clone(), counts.clone(), slots.clone());
        tokio::spawn(async move {
            let Ok(_slot) = slots.acquire_owned().await else {
                return;
            };
            commit_batch(&pool, &node, vec![q], &counts).await;
        });
    };
    while let Some(first) = rx.recv().await {
        if matches!(first.write, Write::InsertSpooled(..)) {
            alone(first);
            continue;
        }
        // Wait for a turn first: meanwhile more writes queue up and join.
        let Ok(turn) = batches.clone().acquire_owned().await else {
            return;
        };
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let mut bytes = first.write.weight();
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH && bytes < MAX_BATCH_BYTES {
            match rx.try_recv() {
                Ok(q) if matches!(q.write, Write::InsertSpooled(..)) => alone(q),
                Ok(q) => {
                    bytes += q.write.weight();
                    batch.push(q);
                }
                Err(_) => break,
            }
        }
        let (pool, node, counts) = (pool.clone(), node.clone(), counts.clone());
        tokio::spawn(async move {
            commit_batch(&pool, &node, batch, &counts).await;
            drop((slot, turn));
        });
    }
}

async fn commit_batch(pool: &Pool, node: &str, batch: Vec<Queued>, counts: &Counts) {
    let writes: Vec<&Write> = batch.iter().map(|q| &q.write).collect();
    match transaction(pool, node, &writes, counts).await {
        Ok(results) => {
            trace!(writes = batch.len(), "queue commit");
            for (q, r) in batch.into_iter().zip(results) {
                // A caller that went away (connection dropped) is no error here.
                let _ = q.reply.send(Ok(r));
            }
        }
        Err(e) if batch.len() == 1 => {
            error!(error = %e, "queue write failed");
            if let Some(q) = batch.into_iter().next() {
                let _ = q.reply.send(Err(e));
            }
        }
        Err(e) => {
            warn!(error = %e, writes = batch.len(), "queue batch failed; committing its writes one by one");
            for q in batch {
                let r = transaction(pool, node, &[&q.write], counts)
                    .await
                    .map(|r| r.first().copied().unwrap_or(false));
                if let Err(e) = &r {
                    error!(error = %e, "queue write failed");
                }
                let _ = q.reply.send(r);
            }
        }
    }
}

/// Runs writes in one transaction; wakes every node when any made something due.
async fn transaction(
    pool: &Pool,
    node: &str,
    writes: &[&Write],
    counts: &Counts,
) -> Result<Vec<bool>, StoreError> {
    let mut client = pool.get().await.map_err(pool_error)?;
    let tx = client.transaction().await.map_err(pg_error)?;
    // The writer's statements take arrays of whatever length a batch has: PostgreSQL would
    // plan them anew for every call (a custom plan each time, since the generic one looks
    // dearer for arrays of unknown length), and that planning was most of their cost. They
    // are index lookups per element for any length, so the generic plan is the right one.
    tx.batch_execute("SET LOCAL plan_cache_mode = force_generic_plan")
        .await
        .map_err(pg_error)?;
    let mut results = Vec::with_capacity(writes.len());
    // The batch's records, and where each one's result goes.
    let (mut records, mut record_at) = (Vec::new(), Vec::new());
    // Messages of one chunk, the common case, go in together: three statements in all.
    let small: Vec<&NewMessage> = writes
        .iter()
        .filter_map(|w| match w {
            Write::Insert(m) if m.body.len() <= CHUNK => Some(&**m),
            _ => None,
        })
        .collect();
    let mut wake = !small.is_empty();
    if !small.is_empty() {
        insert_small(&tx, &small).await?;
    }
    for w in writes {
        let (removed, due) = match w {
            Write::Insert(m) if m.body.len() <= CHUNK => (false, true),
            Write::Insert(m) => insert(&tx, m).await.map(|()| (false, true))?,
            Write::InsertSpooled(m, s) => {
                insert_envelopes(&tx, &[(m, content::spooled_len(m, s))]).await?;
                content::insert_spooled(&tx, m, s).await?;
                (false, true)
            }
            // Recorded all together below.
            Write::Record {
                id,
                updates,
                notifications,
            } => {
                record_at.push(results.len());
                records.push(RecordRef {
                    id,
                    updates,
                    notifications,
                });
                (false, false)
            }
            Write::CachePut {
                key,
                exists,
                expires_ms,
            } => {
                let st = tx
                    .prepare_cached(
                        "INSERT INTO recipient_cache (key, exists_, expires_at) VALUES ($1, $2, $3)
                         ON CONFLICT (key) DO UPDATE SET exists_ = EXCLUDED.exists_, expires_at = EXCLUDED.expires_at",
                    )
                    .await
                    .map_err(pg_error)?;
                tx.execute(&st, &[key, exists, expires_ms])
                    .await
                    .map_err(pg_error)?;
                (false, false)
            }
        };
        wake |= due;
        results.push(removed);
    }
    if !records.is_empty() {
        let outcomes = record_all(&tx, node, &records).await?;
        for (i, (removed, due)) in record_at.into_iter().zip(outcomes) {
            results[i] = removed;
            wake |= due;
        }
    }
    if wake {
        tx.execute("SELECT pg_notify($1, '')", &[&CHANNEL])
            .await
            .map_err(pg_error)?;
    }
    tx.commit().await.map_err(pg_error)?;
    counts.commits.fetch_add(1, Ordering::Relaxed);
    counts
        .writes
        .fetch_add(writes.len() as u64, Ordering::Relaxed);
    Ok(results)
}

/// A new message: envelope, recipients (due at once), body chunks.
pub(super) async fn insert(tx: &Transaction<'_>, m: &NewMessage) -> Result<(), StoreError> {
    insert_envelopes(tx, &[(m, m.body.len() as u64)]).await?;
    let st = tx
        .prepare_cached("INSERT INTO bodies (message_id, seq, chunk) VALUES ($1, $2, $3)")
        .await
        .map_err(pg_error)?;
    // One statement per chunk, one after the other: only the chunk in flight is copied.
    for (seq, chunk) in (0i32..).zip(m.body.chunks(CHUNK)) {
        tx.execute(&st, &[&m.id, &seq, &chunk])
            .await
            .map_err(pg_error)?;
    }
    Ok(())
}

/// New messages of at most one chunk each, all in three statements.
async fn insert_small(tx: &Transaction<'_>, ms: &[&NewMessage]) -> Result<(), StoreError> {
    let envelopes: Vec<(&NewMessage, u64)> = ms.iter().map(|m| (*m, m.body.len() as u64)).collect();
    insert_envelopes(tx, &envelopes).await?;
    let with_body: Vec<&&NewMessage> = ms.iter().filter(|m| !m.body.is_empty()).collect();
    let ids: Vec<&str> = with_body.iter().map(|m| m.id.as_str()).collect();
    let bodies: Vec<&[u8]> = with_body.iter().map(|m| m.body.as_slice()).collect();
    let st = tx
        .prepare_cached(
            "INSERT INTO bodies (message_id, seq, chunk)
             SELECT id, 0, chunk FROM unnest($1::text[], $2::bytea[]) AS t(id, chunk)",
        )
        .await
        .map_err(pg_error)?;
    tx.execute(&st, &[&ids, &bodies]).await.map_err(pg_error)?;
    Ok(())
}

/// The envelopes and recipients of new messages, each with its content's length (the
/// content apart), in two statements.
async fn insert_envelopes(
    tx: &Transaction<'_>,
    with_len: &[(&NewMessage, u64)],
) -> Result<(), StoreError> {
    let ms: Vec<&NewMessage> = with_len.iter().map(|(m, _)| *m).collect();
    let col = |f: fn(&NewMessage) -> &str| ms.iter().map(|m| f(m)).collect::<Vec<&str>>();
    let received: Vec<i64> = ms.iter().map(|m| m.received_at_ms).collect();
    let sizes: Vec<i64> = with_len
        .iter()
        .map(|(_, len)| i64::try_from(*len).unwrap_or(i64::MAX))
        .collect();
    let chunks = with_len
        .iter()
        .map(|(_, len)| i32::try_from(len.div_ceil(CHUNK as u64)))
        .collect::<Result<Vec<i32>, _>>()
        .map_err(|_| StoreError::Backend("message too large".into()))?;
    let auth: Vec<Option<bool>> = ms.iter().map(|m| m.authenticated).collect();
    let st = tx
        .prepare_cached(
            "INSERT INTO messages (id, received_at, sender, mail_params, client, helo, size, chunks, auth)
             SELECT * FROM unnest($1::text[], $2::bigint[], $3::text[], $4::text[], $5::text[],
                                  $6::text[], $7::bigint[], $8::int[], $9::bool[])",
        )
        .await
        .map_err(pg_error)?;
    tx.execute(
        &st,
        &[
            &col(|m| &m.id),
            &received,
            &col(|m| &m.sender),
            &col(|m| &m.mail_params),
            &col(|m| &m.client),
            &col(|m| &m.helo),
            &sizes,
            &chunks,
            &auth,
        ],
    )
    .await
    .map_err(pg_error)?;
    let rcpts: Vec<(&NewMessage, &crate::queue::NewRecipient)> = ms
        .iter()
        .flat_map(|m| m.recipients.iter().map(move |r| (*m, r)))
        .collect();
    let rcol = |f: fn(&crate::queue::NewRecipient) -> &str| {
        rcpts.iter().map(|(_, r)| f(r)).collect::<Vec<&str>>()
    };
    let ids: Vec<&str> = rcpts.iter().map(|(m, _)| m.id.as_str()).collect();
    let due: Vec<i64> = rcpts.iter().map(|(m, _)| m.received_at_ms).collect();
    let held: Vec<bool> = rcpts.iter().map(|(m, _)| m.held).collect();
    let st = tx
        .prepare_cached(
            "INSERT INTO recipients (message_id, address, domain, params, next_attempt, held)
             SELECT i, a, d, p, t, h
             FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bigint[], $6::bool[])
                  WITH ORDINALITY AS u(i, a, d, p, t, h, n)
             ORDER BY n",
        )
        .await
        .map_err(pg_error)?;
    tx.execute(
        &st,
        &[
            &ids,
            &rcol(|r| &r.address),
            &rcol(|r| &r.domain),
            &rcol(|r| &r.params),
            &due,
            &held,
        ],
    )
    .await
    .map_err(pg_error)?;
    Ok(())
}

/// A record write's parts, borrowed from the batch.
struct RecordRef<'a> {
    id: &'a str,
    updates: &'a [Update],
    notifications: &'a [NewMessage],
}

/// Delivery outcomes for recipients this node holds, with the notifications they call for,
/// for every record of a batch in a few statements (one update, the notifications, one
/// removal), so that the counting triggers (`counts.rs`) run once per batch, not once per
/// message. Returns, per record, (message removed, something became due); "removed" is
/// told to the last record of a message in the batch. Outcomes for recipients whose lease
/// another node has taken over are dropped, and so are their notifications: that node
/// delivers them now.
async fn record_all(
    tx: &Transaction<'_>,
    node: &str,
    records: &[RecordRef<'_>],
) -> Result<Vec<(bool, bool)>, StoreError> {
    let st = tx
        .prepare_cached(
            "UPDATE recipients r SET status = u.status, claimed_by = NULL, lease_until = NULL,
                    attempts = r.attempts + u.attempted, next_attempt = u.next_attempt,
                    last_reply = COALESCE(u.last_reply, r.last_reply), warned = r.warned OR u.warned
             FROM unnest($1::bigint[], $2::int[], $3::int[], $4::bigint[], $5::text[], $6::bool[],
                         $7::text[])
                  AS u(id, status, attempted, next_attempt, last_reply, warned, message_id)
             WHERE r.id = ANY($1) AND r.id = u.id AND r.message_id = u.message_id
               AND r.claimed_by = $8
             RETURNING r.id",
        )
        .await
        .map_err(pg_error)?;
    let all = || {
        records
            .iter()
            .flat_map(|r| r.updates.iter().map(move |u| (r.id, u)))
    };
    let rows: Vec<i64> = all().map(|(_, u)| u.row).collect();
    let statuses: Vec<i32> = all().map(|(_, u)| u.status as i32).collect();
    let attempted: Vec<i32> = all().map(|(_, u)| i32::from(u.attempted)).collect();
    let next: Vec<i64> = all().map(|(_, u)| u.next_attempt_ms).collect();
    let replies: Vec<Option<&str>> = all().map(|(_, u)| u.last_reply.as_deref()).collect();
    let warned: Vec<bool> = all().map(|(_, u)| u.warned).collect();
    let ids: Vec<&str> = all().map(|(id, _)| id).collect();
    let applied: HashSet<i64> = if rows.is_empty() {
        Default::default()
    } else {
        tx.query(
            &st,
            &[
                &rows, &statuses, &attempted, &next, &replies, &warned, &ids, &node,
            ],
        )
        .await
        .map_err(pg_error)?
        .iter()
        .map(|r| r.try_get(0))
        .collect::<Result<_, _>>()
        .map_err(pg_error)?
    };
    // A record none of whose outcomes applied lost its lease: it changes nothing.
    let live: Vec<bool> = records
        .iter()
        .map(|r| r.updates.is_empty() || r.updates.iter().any(|u| applied.contains(&u.row)))
        .collect();
    let mut small = Vec::new();
    for (r, _) in records.iter().zip(&live).filter(|(_, live)| **live) {
        for m in r.notifications {
            if m.body.len() <= CHUNK {
                small.push(m);
            } else {
                insert(tx, m).await?;
            }
        }
    }
    if !small.is_empty() {
        insert_small(tx, &small).await?;
    }
    // A message leaves the queue when no recipient is pending any more: kept for the
    // inbox, or removed with its recipients and body chunks (ON DELETE CASCADE).
    let mut touched: Vec<String> = records
        .iter()
        .zip(&live)
        .filter(|(_, live)| **live)
        .map(|(r, _)| r.id.to_string())
        .collect();
    touched.sort_unstable();
    touched.dedup();
    let left: HashSet<String> = super::purge::remove_done(tx, &touched)
        .await?
        .into_iter()
        .collect();
    // The last record of each message in the batch is the one told it left.
    let last: HashMap<&str, usize> = records.iter().enumerate().map(|(i, r)| (r.id, i)).collect();
    let mut out = Vec::with_capacity(records.len());
    for (i, (r, live)) in records.iter().zip(&live).enumerate() {
        if !live {
            warn!(
                queue_id = r.id,
                node,
                "delivery results not recorded: this node's lease ran out and another node took the recipients over (a duplicate is possible)"
            );
            out.push((false, false));
            continue;
        }
        let removed = last.get(r.id) == Some(&i) && left.contains(r.id);
        let due =
            !r.notifications.is_empty() || r.updates.iter().any(|u| u.status == Status::Pending);
        out.push((removed, due));
    }
    Ok(out)
}
