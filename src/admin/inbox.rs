//! `/api/v1/inbox/users/{address}`: the emergency inbox's credentials (what
//! `mx2 inbox passwd` uses). `PUT` stores an argon2id hash for the address's mailbox
//! (hashed by the caller: the password itself never crosses the API), `DELETE` removes it.
//! `POST …/{address}/invite` mails a one-time login code to an alternate address
//! (`mx2 inbox invite`); only its hash is kept. Each is an event. `GET /api/v1/inbox/log`
//! is the inbox's event log (`mx2 inbox log`), by address or domain.
//! Operators only (a tenant's token gets 404, `access.rs`).

use super::Admin;
use super::api::{error, store_error};
use super::bodies::body;
use crate::inbox::auth::is_argon2id;
use crate::queue::inbox::{key_domain, mailbox_key};
use crate::queue::now_ms;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde_json::json;
use std::sync::Arc;

pub fn routes() -> Router<Arc<Admin>> {
    Router::new()
        .route("/api/v1/inbox/users/{address}", put(set).delete(remove))
        .route("/api/v1/inbox/users/{address}/invite", post(invite))
        .route("/api/v1/inbox/log", get(log))
}

/// Events a log answer holds unless `limit` says otherwise.
const DEFAULT_LOG: usize = 1000;

#[derive(serde::Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
struct LogQuery {
    address: Option<String>,
    domain: Option<String>,
    limit: Option<usize>,
}

/// The inbox's events, newest first, each with its line of text; `address` (any case or
/// `+tag`: its mailbox) or `domain` narrows them.
async fn log(
    query: Result<axum::extract::Query<LogQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Ok(axum::extract::Query(q)) = query else {
        return error(
            StatusCode::BAD_REQUEST,
            "query: use address=user@domain, domain=example.com and limit=N (all optional)",
        );
    };
    let address = match q.address.as_deref().map(key) {
        None => None,
        Some(Ok(k)) => Some(k),
        Some(Err(r)) => return *r,
    };
    let domain = q.domain.as_deref().map(crate::queue::domain_key);
    let limit = q
        .limit
        .unwrap_or(DEFAULT_LOG)
        .min(crate::events::INBOX_KEPT);
    let events = crate::events::get().inbox_log(
        |e| {
            address
                .as_deref()
                .is_none_or(|a| e.kind.inbox_address() == Some(a))
                && domain.as_deref().is_none_or(|d| e.kind.domain() == Some(d))
        },
        limit,
    );
    let events: Vec<serde_json::Value> = events
        .into_iter()
        .map(|e| {
            let text = e.kind.text();
            let mut v = serde_json::to_value(e).unwrap_or_default();
            v["text"] = text.into();
            v
        })
        .collect();
    Json(json!({ "events": events })).into_response()
}

/// Records an operator's change to an inbox user.
fn record(kind: crate::events::Kind) {
    tracing::info!(event = %kind.text(), "inbox user changed");
    crate::events::get().record(kind);
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Credential {
    hash: String,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Invite {
    to: String,
}

/// The mailbox key of an address, or the answer saying what is wrong with it.
fn key(address: &str) -> Result<String, Box<Response>> {
    mailbox_key(address).ok_or_else(|| {
        Box::new(error(
            StatusCode::BAD_REQUEST,
            &format!("`{address}` is not a mail address (user@domain)"),
        ))
    })
}

async fn set(
    State(a): State<Arc<Admin>>,
    Path(address): Path<String>,
    b: Result<Json<Credential>, JsonRejection>,
) -> Response {
    let key = match key(&address) {
        Ok(k) => k,
        Err(r) => return *r,
    };
    let b = match body(b, r#"{"hash": "$argon2id$v=19$..."}"#) {
        Ok(b) => b,
        Err(r) => return *r,
    };
    if !is_argon2id(&b.hash) {
        return error(
            StatusCode::BAD_REQUEST,
            "hash is not an argon2id PHC string ($argon2id$v=19$m=…,t=…,p=…$salt$hash): use `mx2 inbox passwd`",
        );
    }
    match a.store.inbox_set_credential(&key, Some(b.hash)).await {
        Ok(replaced) => {
            record(crate::events::Kind::InboxPassword {
                address: key.clone(),
                change: if replaced { "changed" } else { "set" }.into(),
            });
            Json(json!({ "address": key, "replaced": replaced })).into_response()
        }
        Err(e) => store_error(e),
    }
}

async fn remove(State(a): State<Arc<Admin>>, Path(address): Path<String>) -> Response {
    let key = match key(&address) {
        Ok(k) => k,
        Err(r) => return *r,
    };
    match a.store.inbox_set_credential(&key, None).await {
        Ok(true) => {
            record(crate::events::Kind::InboxPassword {
                address: key.clone(),
                change: "removed".into(),
            });
            Json(json!({ "address": key, "deleted": true })).into_response()
        }
        Ok(false) => error(
            StatusCode::NOT_FOUND,
            &format!("{key} has no inbox credentials"),
        ),
        Err(e) => store_error(e),
    }
}

/// Makes a one-time login code for the address, keeps its hash until it expires, and queues
/// a mail with the code to the alternate address `to` (never in the user's own domain: that
/// is the mail being held). The code is not in the answer.
async fn invite(
    State(a): State<Arc<Admin>>,
    Path(address): Path<String>,
    b: Result<Json<Invite>, JsonRejection>,
) -> Response {
    let key = match key(&address) {
        Ok(k) => k,
        Err(r) => return *r,
    };
    let b = match body(b, r#"{"to": "someone@elsewhere.example"}"#) {
        Ok(b) => b,
        Err(r) => return *r,
    };
    let domain = key_domain(&key);
    match &a.inbox {
        None => {
            return error(
                StatusCode::CONFLICT,
                "the emergency inbox is off: a code could not be used; give [inbox] a listener (listen or tls_listen) and set `inbox = true` for the domain",
            );
        }
        Some(inbox) if !inbox.has_domain(domain) => {
            return error(
                StatusCode::CONFLICT,
                &format!(
                    "{domain} has no emergency inbox, so the code could not be used: set `inbox = true` in its [[domain]] and reload"
                ),
            );
        }
        Some(_) => {}
    }
    let to = b.to.trim();
    // The key's rule also refuses what could break out of the `To:` header.
    let Some(to_key) = mailbox_key(to).filter(|_| !to.contains(['<', '>'])) else {
        return error(
            StatusCode::BAD_REQUEST,
            &format!("`to`: `{to}` is not a mail address (user@domain)"),
        );
    };
    if key_domain(&to_key) == key_domain(&key) {
        return error(
            StatusCode::BAD_REQUEST,
            &format!(
                "`to`: {to} is in {}, whose mail is what the inbox holds; give an address elsewhere",
                key_domain(&key)
            ),
        );
    }
    let code = crate::inbox::codes::generate();
    let validity = a.inbox_code_validity;
    let expires_at_ms =
        now_ms().saturating_add(i64::try_from(validity.as_millis()).unwrap_or(i64::MAX));
    if let Err(e) = a
        .store
        .inbox_add_code(
            &key,
            crate::inbox::codes::hash(code.as_bytes()),
            expires_at_ms,
        )
        .await
    {
        return store_error(e);
    }
    let minutes = validity.as_secs().div_ceil(60);
    let text = format!(
        "A one-time code to read the mail held for {key} by the backup mail server {h}:\n\n    {code}\n\nLog in with {key} as the user name and this code as the password, within {minutes} min. It works once.\nIf you did not expect this, tell your mail administrator.",
        h = a.hostname,
    );
    let notice = crate::notice::Notice {
        to,
        subject: &format!("Your one-time code for the emergency inbox of {key}"),
        text: &text,
        kind: "inbox-code",
    };
    match crate::notice::queue(&*a.store, &a.scheduler, &a.hostname, notice).await {
        Ok(queue_id) => {
            record(crate::events::Kind::InboxInvite {
                address: key.clone(),
                to: to.to_string(),
            });
            Json(json!({
            "address": key,
            "to": to,
            "expires_at_ms": expires_at_ms,
            "queue_id": queue_id,
            }))
            .into_response()
        }
        Err(e) => store_error(e),
    }
}
