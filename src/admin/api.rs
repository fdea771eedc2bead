//! The JSON API, version 1 (documented in docs/api.md): status, queue listing with filters
//! and paging, one message, its raw content, actions (flush, hold, release, delete, bounce),
//! recent events, and reload. Errors are JSON `{"error": "..."}` with a fitting status.
//! A tenant's request sees its own domains' mail only ([`super::scope`]).

use super::Admin;
use super::access::Access;
use super::scope::Scope;
use crate::queue::{DEFAULT_LIST, Filter, MAX_LIST, OperatorAction, State, StoreError};
use axum::Router;
use axum::extract::{Path, Query, State as Ctx};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::json;
use std::collections::HashMap;
use std::sync::Arc;

/// The most message ids one batch action takes.
pub const MAX_BATCH: usize = 10_000;

pub fn routes() -> Router<Arc<Admin>> {
    Router::new()
        .route("/api/v1/status", get(status))
        .route("/api/v1/identity", get(identity))
        .route("/api/v1/events", get(events))
        .route("/api/v1/queue", get(list))
        .route("/api/v1/queue/count", get(count))
        .route("/api/v1/queue/actions", post(batch))
        .route("/api/v1/queue/{id}", get(show).delete(delete_one))
        .route("/api/v1/queue/{id}/eml", get(export))
        .route("/api/v1/queue/{id}/{action}", post(act_one))
        .route("/api/v1/flush", post(flush))
        .route("/api/v1/reload", post(reload))
}

pub fn error(code: StatusCode, message: &str) -> Response {
    (code, Json(json!({ "error": message }))).into_response()
}

fn store_error(e: StoreError) -> Response {
    match e {
        StoreError::NotFound(id) => error(
            StatusCode::NOT_FOUND,
            &format!("no message {id} in the queue"),
        ),
        e => error(StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
    }
}

async fn status(Ctx(a): Ctx<Arc<Admin>>, Extension(who): Extension<Access>) -> Response {
    match a.status_in(&a.scope(&who)).await {
        Ok(s) => Json(s).into_response(),
        Err(e) => store_error(e),
    }
}

/// Who answers here, without touching the queue: the command line checks it before every
/// command so that another instance's admin port is never mistaken for this one's.
async fn identity(Ctx(a): Ctx<Arc<Admin>>) -> Response {
    Json(json!({
        "hostname": a.hostname,
        "state_dir": a.state_dir,
        "queue_id": a.queue_id,
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_s": a.uptime_s(),
    }))
    .into_response()
}

async fn events(Ctx(a): Ctx<Arc<Admin>>, Extension(who): Extension<Access>) -> Response {
    Json(json!({ "events": a.events_in(&a.scope(&who)) })).into_response()
}

/// The listing's filter from query parameters: domain, sender, recipient, older_than
/// (a duration like `2h`), state (queued, deferred, active, held), after (a queue id) and
/// limit.
pub fn filter_from(q: &HashMap<String, String>) -> Result<Filter, String> {
    let mut f = Filter::default();
    for (k, v) in q {
        let v = v.trim();
        if v.is_empty() {
            continue;
        }
        match k.as_str() {
            "domain" => f.domain = Some(v.to_string()),
            "sender" => f.sender = Some(v.to_string()),
            "recipient" => f.recipient = Some(v.to_string()),
            "after" => f.after = Some(v.to_string()),
            "older_than" => {
                let d = crate::config::parse_duration(v).map_err(|e| format!("older_than: {e}"))?;
                let ms = i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
                f.received_before_ms = Some(crate::queue::now_ms().saturating_sub(ms));
            }
            "state" => {
                f.state = Some(match v {
                    "queued" => State::Queued,
                    "deferred" => State::Deferred,
                    "active" => State::Active,
                    "held" => State::Held,
                    other => {
                        return Err(format!(
                            "state `{other}`: use queued, deferred, active or held"
                        ));
                    }
                })
            }
            "limit" => {
                f.limit = v
                    .parse::<usize>()
                    .ok()
                    .filter(|n| (1..=MAX_LIST).contains(n))
                    .ok_or_else(|| format!("limit `{v}`: a number from 1 to {}", MAX_LIST))?
            }
            other => {
                return Err(format!(
                    "unknown parameter `{other}`: use domain, sender, recipient, older_than, state, after, limit"
                ));
            }
        }
    }
    Ok(f)
}

async fn list(
    Ctx(a): Ctx<Arc<Admin>>,
    Extension(who): Extension<Access>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let filter = match filter_from(&q) {
        Ok(f) => f,
        Err(e) => return error(StatusCode::BAD_REQUEST, &e),
    };
    let limit = match filter.limit {
        0 => DEFAULT_LIST,
        n => n,
    };
    match a.list_in(&a.scope(&who), filter).await {
        Ok(messages) => {
            // More may follow when the page is full.
            let next = (messages.len() == limit)
                .then(|| messages.last().map(|m| m.id.clone()))
                .flatten();
            Json(json!({ "messages": messages, "next": next })).into_response()
        }
        Err(e) => store_error(e),
    }
}

/// How many messages the listing's filters select: `{"total": n}`.
async fn count(
    Ctx(a): Ctx<Arc<Admin>>,
    Extension(who): Extension<Access>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let filter = match filter_from(&q) {
        Ok(f) => f,
        Err(e) => return error(StatusCode::BAD_REQUEST, &e),
    };
    let Some(filter) = a.scope(&who).filter(filter) else {
        return Json(json!({ "total": 0 })).into_response();
    };
    match a.store.count(filter).await {
        Ok(n) => Json(json!({ "total": n })).into_response(),
        Err(e) => store_error(e),
    }
}

async fn show(
    Ctx(a): Ctx<Arc<Admin>>,
    Extension(who): Extension<Access>,
    Path(id): Path<String>,
) -> Response {
    match a.message_in(&a.scope(&who), &id).await {
        Ok(Some((m, _))) => Json(m).into_response(),
        Ok(None) => store_error(StoreError::NotFound(id)),
        Err(e) => store_error(e),
    }
}

async fn export(
    Ctx(a): Ctx<Arc<Admin>>,
    Extension(who): Extension<Access>,
    Path(id): Path<String>,
) -> Response {
    let scope = a.scope(&who);
    if scope != Scope::All {
        match a.message_in(&scope, &id).await {
            Ok(Some(_)) => {}
            Ok(None) => return store_error(StoreError::NotFound(id)),
            Err(e) => return store_error(e),
        }
    }
    match a.store.body(&id).await {
        Ok(body) => (
            [
                (header::CONTENT_TYPE, "message/rfc822".to_string()),
                (
                    header::CONTENT_DISPOSITION,
                    format!(
                        "attachment; filename=\"{}.eml\"",
                        id.replace(|c: char| !c.is_ascii_alphanumeric(), "_")
                    ),
                ),
            ],
            body,
        )
            .into_response(),
        Err(e) => store_error(e),
    }
}

/// An action by name: flush, hold, release, delete or bounce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Named {
    Store(OperatorAction),
    Bounce,
}

pub fn action_named(name: &str) -> Option<Named> {
    Some(match name {
        "flush" => Named::Store(OperatorAction::Flush),
        "hold" => Named::Store(OperatorAction::Hold),
        "release" => Named::Store(OperatorAction::Release),
        "delete" => Named::Store(OperatorAction::Delete),
        "bounce" => Named::Bounce,
        _ => return None,
    })
}

async fn run(a: &Admin, action: Named, ids: Vec<String>) -> Response {
    let result = match action {
        Named::Store(action) => a.scheduler.act(ids, action).await,
        Named::Bounce => a.scheduler.bounce(ids).await,
    };
    match result {
        Ok(n) => Json(json!({ "affected": n })).into_response(),
        Err(e) => store_error(e),
    }
}

/// Whether an action on a whole message may reach recipients of other domains than the
/// requester's: all but flush (which only makes mail due) change what happens to them.
fn reaches_others(action: Named) -> bool {
    action != Named::Store(OperatorAction::Flush)
}

/// The refusal of an action on messages that also wait for other domains' recipients.
fn shared_refused(name: &str, ids: &[String]) -> Response {
    let shown: Vec<&str> = ids.iter().take(10).map(String::as_str).collect();
    let more = ids.len().saturating_sub(shown.len());
    error(
        StatusCode::CONFLICT,
        &format!(
            "cannot {name} {}{}: also addressed to recipients in domains that are not yours; nothing was changed (flush works; ask the operator for the rest)",
            shown.join(", "),
            if more > 0 {
                format!(" and {more} more")
            } else {
                String::new()
            }
        ),
    )
}

async fn act_one(
    Ctx(a): Ctx<Arc<Admin>>,
    Extension(who): Extension<Access>,
    Path((id, name)): Path<(String, String)>,
) -> Response {
    let Some(action) = action_named(&name) else {
        return error(
            StatusCode::NOT_FOUND,
            &format!("unknown action `{name}`: use flush, hold, release, delete or bounce"),
        );
    };
    match a.message_in(&a.scope(&who), &id).await {
        Ok(Some((_, true))) if reaches_others(action) => shared_refused(&name, &[id]),
        Ok(Some(_)) => run(&a, action, vec![id]).await,
        Ok(None) => store_error(StoreError::NotFound(id)),
        Err(e) => store_error(e),
    }
}

async fn delete_one(
    ctx: Ctx<Arc<Admin>>,
    who: Extension<Access>,
    Path(id): Path<String>,
) -> Response {
    act_one(ctx, who, Path((id, "delete".into()))).await
}

/// The ids of a batch that `scope` may act on; Err the refusal when some also wait for
/// other domains' recipients and the action would reach them. Ids out of view are left
/// out, as ids no longer in the queue are.
async fn in_scope(
    a: &Admin,
    scope: &Scope,
    name: &str,
    action: Named,
    ids: Vec<String>,
) -> Result<Vec<String>, Response> {
    if *scope == Scope::All {
        return Ok(ids);
    }
    let (mut mine, mut shared) = (Vec::new(), Vec::new());
    for id in ids {
        match a.message_in(scope, &id).await {
            Ok(Some((_, true))) if reaches_others(action) => shared.push(id),
            Ok(Some(_)) => mine.push(id),
            Ok(None) => {}
            Err(e) => return Err(store_error(e)),
        }
    }
    if shared.is_empty() {
        Ok(mine)
    } else {
        Err(shared_refused(name, &shared))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Batch {
    action: String,
    ids: Vec<String>,
}

async fn batch(
    Ctx(a): Ctx<Arc<Admin>>,
    Extension(who): Extension<Access>,
    body: Result<Json<Batch>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let Json(b) = match body {
        Ok(b) => b,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                &format!("{e}: send {{\"action\": \"delete\", \"ids\": [\"…\"]}}"),
            );
        }
    };
    let Some(action) = action_named(&b.action) else {
        return error(
            StatusCode::BAD_REQUEST,
            &format!(
                "unknown action `{}`: use flush, hold, release, delete or bounce",
                b.action
            ),
        );
    };
    if b.ids.len() > MAX_BATCH {
        return error(
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!("at most {MAX_BATCH} ids per request"),
        );
    }
    match in_scope(&a, &a.scope(&who), &b.action, action, b.ids).await {
        Ok(ids) => run(&a, action, ids).await,
        Err(refused) => refused,
    }
}

/// Flushes everything, or one domain (`?domain=`): held mail due now and its primaries
/// treated as up.
async fn flush(
    Ctx(a): Ctx<Arc<Admin>>,
    Extension(who): Extension<Access>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    use crate::inbound::Flusher;
    let scope = a.scope(&who);
    let domains = match (
        q.get("domain")
            .map(|d| d.trim().trim_end_matches('.').to_ascii_lowercase()),
        &scope,
    ) {
        (Some(d), _) if !d.is_empty() && !scope.covers(&d) => {
            return error(StatusCode::NOT_FOUND, super::access::NOT_FOUND);
        }
        (Some(d), _) if !d.is_empty() => vec![d],
        (_, Scope::Domains(mine)) => mine.iter().cloned().collect(),
        (_, Scope::All) => match a.store.depth().await {
            Ok(depth) => depth.into_iter().map(|d| d.domain).collect(),
            Err(e) => return store_error(e),
        },
    };
    if domains.is_empty() {
        return Json(json!({ "affected": 0, "domains": domains })).into_response();
    }
    match a.scheduler.flush(domains.clone()).await {
        Ok(n) => Json(json!({ "affected": n, "domains": domains })).into_response(),
        Err(e) => store_error(e),
    }
}

async fn reload(Ctx(a): Ctx<Arc<Admin>>) -> Response {
    match a.reloader.reload().await {
        Ok(detail) => Json(json!({ "ok": true, "detail": detail })).into_response(),
        Err(e) => error(StatusCode::UNPROCESSABLE_ENTITY, &e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn filters_from_parameters() {
        let f = filter_from(&q(&[
            ("domain", "x.test"),
            ("state", "held"),
            ("limit", "5"),
        ]))
        .unwrap();
        assert_eq!(f.domain.as_deref(), Some("x.test"));
        assert_eq!(f.state, Some(State::Held));
        assert_eq!(f.limit, 5);
        let f = filter_from(&q(&[("older_than", "1h")])).unwrap();
        let cutoff = f.received_before_ms.unwrap();
        assert!((crate::queue::now_ms() - 3_600_000 - cutoff).abs() < 5_000);
        assert!(
            filter_from(&q(&[("state", "lost")]))
                .unwrap_err()
                .contains("queued")
        );
        assert!(filter_from(&q(&[("limit", "0")])).is_err());
        assert!(
            filter_from(&q(&[("colour", "red")]))
                .unwrap_err()
                .contains("unknown parameter")
        );
        assert!(
            filter_from(&q(&[("older_than", "soon")]))
                .unwrap_err()
                .starts_with("older_than")
        );
    }

    #[test]
    fn action_names() {
        assert_eq!(
            action_named("hold"),
            Some(Named::Store(OperatorAction::Hold))
        );
        assert_eq!(action_named("bounce"), Some(Named::Bounce));
        assert_eq!(action_named("explode"), None);
    }
}
