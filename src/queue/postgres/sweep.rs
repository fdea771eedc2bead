//! The content of removed messages, deleted in the background (PostgreSQL). Deleting a
//! large message's chunk rows deletes every TOAST row behind them (about 25,000 for 50 MB),
//! and WAL-logs each: as the foreign key's cascade, inside the writer's batch, that held
//! every delivery outcome and acceptance in the batch for up to 1.8 s during a drain of
//! 50 MB messages, and each delivery connection waited for it before its next message.
//!
//! So `bodies` has no foreign key to `messages`; a statement trigger on `messages` takes
//! their place. For removed messages of one chunk it deletes the chunk rows at once, in the
//! removing statement, as the cascade did. For larger ones it notes the id in
//! `doomed_bodies`, in the same transaction, so nothing is forgotten by a crash; every
//! node then deletes the noted messages' rows, a few messages per transaction
//! ([`PER_ROUND`]), taking notes other nodes are not at (`FOR UPDATE SKIP LOCKED`).
//!
//! A noted message is already out of the queue: no claim, listing or count sees it. Its
//! chunk rows stay readable until deleted, and nothing asks for them.

use super::{Inner, first_column, pg_error, pool_error};
use crate::queue::StoreError;
use std::sync::Weak;
use std::time::Duration;
use tracing::warn;

/// Migration step 12: the trigger in place of the cascade, and the notes.
pub(super) const SCHEMA: &str = "
DO $$
DECLARE c TEXT;
BEGIN
    FOR c IN SELECT conname FROM pg_constraint
             WHERE conrelid = 'bodies'::regclass AND contype = 'f' LOOP
        EXECUTE format('ALTER TABLE bodies DROP CONSTRAINT %I', c);
    END LOOP;
END $$;
CREATE TABLE doomed_bodies (message_id TEXT COLLATE \"C\" PRIMARY KEY);
CREATE FUNCTION mx2_bodies_of_removed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM gone) THEN
        RETURN NULL;
    END IF;
    DELETE FROM bodies
     WHERE message_id = ANY (ARRAY(SELECT id FROM gone WHERE chunks <= 1));
    INSERT INTO doomed_bodies (message_id)
         SELECT id FROM gone WHERE chunks > 1
    ON CONFLICT DO NOTHING;
    RETURN NULL;
END $$;
CREATE TRIGGER messages_bodies_of_removed AFTER DELETE ON messages
    REFERENCING OLD TABLE AS gone FOR EACH STATEMENT
    EXECUTE FUNCTION mx2_bodies_of_removed();
";

/// Messages whose rows one transaction deletes (each of at most `max_message_size`).
pub const PER_ROUND: i64 = 4;
/// How often each node looks when the last look found nothing.
const LOOK_EVERY: Duration = Duration::from_secs(1);
/// How long a node waits after a failed round.
const AFTER_ERROR: Duration = Duration::from_secs(30);

/// Deletes the chunk rows of at most `per_round` noted messages in one transaction; returns
/// how many messages' rows went.
pub(super) async fn round(
    c: &mut deadpool_postgres::Object,
    per_round: i64,
) -> Result<usize, StoreError> {
    let tx = c.transaction().await.map_err(pg_error)?;
    let noted = tx
        .query(
            "SELECT message_id FROM doomed_bodies LIMIT $1 FOR UPDATE SKIP LOCKED",
            &[&per_round],
        )
        .await
        .map_err(pg_error)?;
    let ids: Vec<String> = first_column(&noted)?;
    if ids.is_empty() {
        return Ok(0);
    }
    tx.execute("DELETE FROM bodies WHERE message_id = ANY($1)", &[&ids])
        .await
        .map_err(pg_error)?;
    tx.execute(
        "DELETE FROM doomed_bodies WHERE message_id = ANY($1)",
        &[&ids],
    )
    .await
    .map_err(pg_error)?;
    tx.commit().await.map_err(pg_error)?;
    Ok(ids.len())
}

/// Runs rounds while the store lives: one after another while there are notes, then one
/// every [`LOOK_EVERY`].
pub(super) async fn keep_sweeping(inner: Weak<Inner>) {
    loop {
        let Some(strong) = inner.upgrade() else {
            return;
        };
        let done = match strong.pool.get().await {
            Ok(mut c) => round(&mut c, PER_ROUND).await,
            Err(e) => Err(pool_error(e)),
        };
        drop(strong);
        match done {
            Ok(0) => tokio::time::sleep(LOOK_EVERY).await,
            Ok(_) => {}
            Err(e) => {
                warn!(error = %e, "cannot delete the content of removed messages; trying again in 30 s (it takes disk space meanwhile)");
                tokio::time::sleep(AFTER_ERROR).await;
            }
        }
    }
}
