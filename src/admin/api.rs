//! The JSON API, version 1 (documented in docs/api.md): status, queue listing with filters
//! and paging, one message, its raw content, recent events, and reload; the actions
//! (flush, hold, release, delete, bounce) are in [`super::actions`]. Errors are JSON `{"error": "..."}` with a fitting status.
//! A tenant's request sees its own domains' mail only ([`super::scope`]).

use super::access::Access;
use super::scope::Scope;
use super::{Admin, actions};
use crate::queue::{DEFAULT_LIST, Filter, MAX_LIST, State, StoreError};
use axum::Router;
use axum::extract::{Path, Query, State as Ctx};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json};
use serde_json::json;
use std::collections::HashMap;
use std::sync::Arc;

pub fn routes() -> Router<Arc<Admin>> {
    Router::new()
        .route("/api/v1/status", get(status))
        .route("/api/v1/identity", get(identity))
        .route("/api/v1/events", get(events))
        .route("/api/v1/queue", get(list))
        .route("/api/v1/queue/count", get(count))
        .route("/api/v1/queue/actions", post(actions::batch))
        .route("/api/v1/queue/{id}", get(show).delete(actions::delete_one))
        .route("/api/v1/queue/{id}/eml", get(export))
        .route("/api/v1/queue/{id}/{action}", post(actions::act_one))
        .route("/api/v1/flush", post(actions::flush))
        .route("/api/v1/reload", post(reload))
}

pub fn error(code: StatusCode, message: &str) -> Response {
    (code, Json(json!({ "error": message }))).into_response()
}

pub(super) fn store_error(e: StoreError) -> Response {
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
    match a.store.body_reader(&id).await {
        Ok(reader) => {
            let name = format!(
                "{}.eml",
                id.replace(|c: char| !c.is_ascii_alphanumeric(), "_")
            );
            crate::download::response(reader, "message/rfc822", &name)
        }
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
}
