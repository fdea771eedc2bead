//! Group commit for the PostgreSQL store: acceptances, delivery outcomes and cache entries
//! are handed to one writer task, which gathers whatever is waiting into one transaction and
//! answers every caller once it has committed. Up to `writers` transactions run at once on
//! pooled connections; while they do, the next batch gathers. A batch that fails is run again
//! one write per transaction, so one bad write does not fail the others.

use super::{CHANNEL, CHUNK, pg_error, pool_error};
use crate::queue::{NewMessage, Status, StoreError, StoreFuture, Update};
use deadpool_postgres::{Pool, Transaction};
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

async fn run(
    mut rx: mpsc::UnboundedReceiver<Queued>,
    pool: Pool,
    node: Arc<String>,
    writers: usize,
    counts: Arc<Counts>,
) {
    let slots = Arc::new(Semaphore::new(writers));
    while let Some(first) = rx.recv().await {
        // Wait for a free connection first: meanwhile more writes queue up and join.
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let mut bytes = first.write.weight();
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH && bytes < MAX_BATCH_BYTES {
            match rx.try_recv() {
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
            drop(slot);
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
    let mut results = Vec::with_capacity(writes.len());
    let mut wake = false;
    for w in writes {
        let (removed, due) = match w {
            Write::Insert(m) => insert(&tx, m).await.map(|()| (false, true))?,
            Write::Record {
                id,
                updates,
                notifications,
            } => record(&tx, node, id, updates, notifications).await?,
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

/// A new message: envelope, body chunks, recipients (due at once).
pub(super) async fn insert(tx: &Transaction<'_>, m: &NewMessage) -> Result<(), StoreError> {
    let chunks = i32::try_from(m.body.len().div_ceil(CHUNK))
        .map_err(|_| StoreError::Backend("message too large".into()))?;
    let size = i64::try_from(m.body.len()).unwrap_or(i64::MAX);
    let st = tx
        .prepare_cached(
            "INSERT INTO messages (id, received_at, sender, mail_params, client, helo, size, chunks, auth)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .await
        .map_err(pg_error)?;
    tx.execute(
        &st,
        &[
            &m.id,
            &m.received_at_ms,
            &m.sender,
            &m.mail_params,
            &m.client,
            &m.helo,
            &size,
            &chunks,
            &m.authenticated,
        ],
    )
    .await
    .map_err(pg_error)?;
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
    let addresses: Vec<&str> = m.recipients.iter().map(|r| r.address.as_str()).collect();
    let domains: Vec<&str> = m.recipients.iter().map(|r| r.domain.as_str()).collect();
    let params: Vec<&str> = m.recipients.iter().map(|r| r.params.as_str()).collect();
    let st = tx
        .prepare_cached(
            "INSERT INTO recipients (message_id, address, domain, params, next_attempt)
             SELECT $1, a, d, p, $5
             FROM unnest($2::text[], $3::text[], $4::text[]) WITH ORDINALITY AS t(a, d, p, n)
             ORDER BY n",
        )
        .await
        .map_err(pg_error)?;
    tx.execute(
        &st,
        &[&m.id, &addresses, &domains, &params, &m.received_at_ms],
    )
    .await
    .map_err(pg_error)?;
    Ok(())
}

/// Delivery outcomes for recipients this node holds, with the notifications they call for.
/// Returns (message removed, something became due). Outcomes for recipients whose lease
/// another node has taken over are dropped, and so are their notifications: that node
/// delivers them now.
async fn record(
    tx: &Transaction<'_>,
    node: &str,
    id: &str,
    updates: &[Update],
    notifications: &[NewMessage],
) -> Result<(bool, bool), StoreError> {
    let st = tx
        .prepare_cached(
            "UPDATE recipients SET status = $1, claimed_by = NULL, lease_until = NULL,
                    attempts = attempts + $2, next_attempt = $3,
                    last_reply = COALESCE($4, last_reply), warned = warned OR $7
             WHERE id = $5 AND message_id = $6 AND claimed_by = $8",
        )
        .await
        .map_err(pg_error)?;
    let mut applied = 0;
    for u in updates {
        applied += tx
            .execute(
                &st,
                &[
                    &(u.status as i32),
                    &i32::from(u.attempted),
                    &u.next_attempt_ms,
                    &u.last_reply,
                    &u.row,
                    &id,
                    &u.warned,
                    &node,
                ],
            )
            .await
            .map_err(pg_error)?;
    }
    if applied == 0 && !updates.is_empty() {
        warn!(
            queue_id = id,
            node,
            "delivery results not recorded: this node's lease ran out and another node took the recipients over (a duplicate is possible)"
        );
        return Ok((false, false));
    }
    for m in notifications {
        insert(tx, m).await?;
    }
    let pending = tx
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM recipients WHERE message_id = $1 AND status = 0)",
            &[&id],
        )
        .await
        .map_err(pg_error)?
        .try_get::<_, bool>(0)
        .map_err(pg_error)?;
    let due = !notifications.is_empty() || updates.iter().any(|u| u.status == Status::Pending);
    if pending {
        return Ok((false, due));
    }
    // Recipients and body chunks go with the message (ON DELETE CASCADE).
    let n = tx
        .execute("DELETE FROM messages WHERE id = $1", &[&id])
        .await
        .map_err(pg_error)?;
    Ok((n > 0, due))
}
