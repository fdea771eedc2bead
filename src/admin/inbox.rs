//! `/api/v1/inbox/users/{address}`: the emergency inbox's credentials (what
//! `mx2 inbox passwd` uses). `PUT` stores an argon2id hash for the address's mailbox
//! (hashed by the caller: the password itself never crosses the API), `DELETE` removes it.
//! `POST …/{address}/invite` mails a one-time login code to an alternate address
//! (`mx2 inbox invite`); only its hash is kept.
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
use axum::routing::{post, put};
use axum::{Json, Router};
use serde_json::json;
use std::sync::Arc;

pub fn routes() -> Router<Arc<Admin>> {
    Router::new()
        .route("/api/v1/inbox/users/{address}", put(set).delete(remove))
        .route("/api/v1/inbox/users/{address}/invite", post(invite))
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
        Ok(replaced) => Json(json!({ "address": key, "replaced": replaced })).into_response(),
        Err(e) => store_error(e),
    }
}

async fn remove(State(a): State<Arc<Admin>>, Path(address): Path<String>) -> Response {
    let key = match key(&address) {
        Ok(k) => k,
        Err(r) => return *r,
    };
    match a.store.inbox_set_credential(&key, None).await {
        Ok(true) => Json(json!({ "address": key, "deleted": true })).into_response(),
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
        Ok(queue_id) => Json(json!({
            "address": key,
            "to": to,
            "expires_at_ms": expires_at_ms,
            "queue_id": queue_id,
        }))
        .into_response(),
        Err(e) => store_error(e),
    }
}
