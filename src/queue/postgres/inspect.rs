//! Operators' queries over the PostgreSQL queue: listings with filters and paging, one
//! message (depth and totals are the maintained counters, [`counts`]). The same answers as the
//! embedded store's `embedded::inspect`; a recipient counts as active while a node's lease on
//! it runs.

use super::{NOW_MS, counts, pg_error};
use crate::queue::{Filter, Listed, RecipientState, Shown, State, Status, StoreError};
use crate::queue::{domain_key, list_limit};
use tokio_postgres::Row;

fn count(r: &Row, i: usize) -> Result<u64, tokio_postgres::Error> {
    Ok(u64::try_from(r.try_get::<_, i64>(i)?).unwrap_or(0))
}

fn active(r: &str) -> String {
    format!("bool_or({r}.claimed_by IS NOT NULL AND {r}.lease_until >= {NOW_MS})")
}

/// The filter's conditions on one message, `{ID}` its queue id (parameters $2 to $4, $6,
/// $7). Each is an index lookup by queue id.
fn conditions(id: &str) -> String {
    format!(
        "EXISTS (SELECT 1 FROM messages m WHERE m.id = {id}
               AND ($2::text IS NULL OR strpos(lower(m.sender), $2) > 0)
               AND ($4::bigint IS NULL OR m.received_at <= $4))
         AND (cardinality($7::text[]) = 0 OR EXISTS (SELECT 1 FROM recipients x
               WHERE x.message_id = {id} AND x.status = 0 AND x.domain = ANY($7)))
         AND ($3::text IS NULL OR EXISTS (SELECT 1 FROM recipients x
               WHERE x.message_id = {id} AND x.status = 0 AND strpos(lower(x.address), $3) > 0))
         AND ($6::text IS NULL OR (SELECT CASE WHEN bool_or(x.held) THEN 'held'
                                               WHEN {active} THEN 'active'
                                               WHEN MAX(x.attempts) > 0 THEN 'deferred'
                                               ELSE 'queued' END
                                   FROM recipients x WHERE x.message_id = {id} AND x.status = 0) = $6)",
        active = active("x")
    )
}

/// The queue ids a filter selects (parameters $1 to $7), oldest first, after $5: walked in
/// queue-id order through `recipients_domain_message` when the filter names a domain ($1),
/// else through the messages' primary key, so that a listing stops after its limit instead
/// of reading the whole queue (as the embedded store's listing does).
fn selected(f: &Filter) -> String {
    if f.domain.is_some() {
        format!(
            "SELECT DISTINCT d.message_id AS id FROM recipients d
             WHERE d.domain = $1 AND d.status = 0 AND d.message_id > COALESCE($5, '')
               AND {}
             ORDER BY d.message_id",
            conditions("d.message_id")
        )
    } else {
        format!(
            "SELECT a.id FROM messages a
             WHERE a.id > COALESCE($5, '') AND $1::text IS NULL -- ($1 is unused, but typed)
               AND EXISTS (SELECT 1 FROM recipients x WHERE x.message_id = a.id AND x.status = 0)
               AND {}
             ORDER BY a.id",
            conditions("a.id")
        )
    }
}

/// The filter's values for [`selected`], in order.
struct Matching {
    domain: Option<String>,
    sender: Option<String>,
    recipient: Option<String>,
    before: Option<i64>,
    after: Option<String>,
    state: Option<&'static str>,
    domains: Vec<String>,
}

impl Matching {
    fn of(f: &Filter) -> Self {
        let lower = |s: &Option<String>| s.as_ref().map(|s| s.to_lowercase());
        Self {
            domain: f.domain.as_deref().map(domain_key),
            sender: lower(&f.sender),
            recipient: lower(&f.recipient),
            before: f.received_before_ms,
            after: f.after.clone(),
            state: f.state.map(State::name),
            domains: f
                .domains
                .iter()
                .map(String::as_str)
                .map(domain_key)
                .collect(),
        }
    }

    fn params(&self) -> [&(dyn tokio_postgres::types::ToSql + Sync); 7] {
        [
            &self.domain,
            &self.sender,
            &self.recipient,
            &self.before,
            &self.after,
            &self.state,
            &self.domains,
        ]
    }
}

/// How many messages the filter selects (its limit aside). A filter on nothing or on one
/// domain alone is answered from the counters; any other walks what it selects.
pub(super) async fn matching_count(
    c: &tokio_postgres::Client,
    f: &Filter,
) -> Result<u64, StoreError> {
    let only_domain = f.domains.is_empty()
        && f.sender.is_none()
        && f.recipient.is_none()
        && f.received_before_ms.is_none()
        && f.state.is_none()
        && f.after.is_none();
    if only_domain {
        return match &f.domain {
            Some(d) => counts::messages_in(c, &domain_key(d)).await,
            None => counts::stats(c).await.map(|s| s.messages),
        };
    }
    let sql = format!("SELECT COUNT(*) FROM ({}) t", selected(f));
    let m = Matching::of(f);
    let row = c.query_one(&sql, &m.params()).await.map_err(pg_error)?;
    count(&row, 0).map_err(pg_error)
}

/// A listing: the selected ids first, up to the limit ($8), then their rows.
pub(super) async fn list(
    c: &tokio_postgres::Client,
    f: &Filter,
) -> Result<Vec<Listed>, StoreError> {
    let sql = format!(
        "SELECT m.id, m.received_at, m.sender, m.size, string_agg(r.address, ' ' ORDER BY r.id),
                MIN(r.next_attempt), MAX(r.last_reply), bool_or(r.held), {}, MAX(r.attempts)
         FROM ({} LIMIT $8) s
         JOIN messages m ON m.id = s.id
         JOIN recipients r ON r.message_id = m.id AND r.status = 0
         GROUP BY m.id ORDER BY m.id",
        active("r"),
        selected(f)
    );
    let limit = i64::try_from(list_limit(f)).unwrap_or(i64::MAX);
    let m = Matching::of(f);
    let mut params = m.params().to_vec();
    params.push(&limit);
    let rows = c.query(&sql, &params).await.map_err(pg_error)?;
    let listed = |r: &Row| -> Result<Listed, tokio_postgres::Error> {
        let attempts = u32::try_from(r.try_get::<_, i32>(9)?).unwrap_or(0);
        Ok(Listed {
            id: r.try_get(0)?,
            received_at_ms: r.try_get(1)?,
            sender: r.try_get(2)?,
            size: count(r, 3)?,
            pending: r
                .try_get::<_, Option<String>>(4)?
                .unwrap_or_default()
                .split(' ')
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect(),
            state: State::of(r.try_get(7)?, r.try_get(8)?, attempts),
            attempts,
            next_attempt_ms: r.try_get(5)?,
            last_reply: r.try_get(6)?,
        })
    };
    rows.iter().map(|r| listed(r).map_err(pg_error)).collect()
}

pub(super) async fn show(
    c: &tokio_postgres::Client,
    id: &str,
) -> Result<Option<Shown>, StoreError> {
    let Some(head) = c
        .query_opt(
            "SELECT id, received_at, sender, mail_params, client, helo, size FROM messages WHERE id = $1",
            &[&id],
        )
        .await
        .map_err(pg_error)?
    else {
        return Ok(None);
    };
    let rows = c
        .query(
            "SELECT address, status, held, attempts, next_attempt, last_reply
             FROM recipients WHERE message_id = $1 ORDER BY id",
            &[&id],
        )
        .await
        .map_err(pg_error)?;
    let shown = || -> Result<Shown, StoreError> {
        let mut recipients = Vec::with_capacity(rows.len());
        for r in &rows {
            let stored = r.try_get::<_, i32>(1).map_err(pg_error)?;
            let status = Status::from_stored(i64::from(stored)).ok_or_else(|| {
                StoreError::Backend(format!("message {id}: unknown recipient status {stored}"))
            })?;
            let column = |e| pg_error(e);
            recipients.push(RecipientState {
                address: r.try_get(0).map_err(column)?,
                status,
                held: r.try_get(2).map_err(column)?,
                attempts: u32::try_from(r.try_get::<_, i32>(3).map_err(column)?).unwrap_or(0),
                next_attempt_ms: r.try_get(4).map_err(column)?,
                last_reply: r.try_get(5).map_err(column)?,
            });
        }
        let head = || -> Result<Shown, tokio_postgres::Error> {
            Ok(Shown {
                id: head.try_get(0)?,
                received_at_ms: head.try_get(1)?,
                sender: head.try_get(2)?,
                mail_params: head.try_get(3)?,
                client: head.try_get(4)?,
                helo: head.try_get(5)?,
                size: count(&head, 6)?,
                recipients,
            })
        };
        head().map_err(pg_error)
    };
    shown().map(Some)
}
