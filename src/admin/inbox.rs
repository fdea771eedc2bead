//! `/api/v1/inbox/users/{address}`: the emergency inbox's credentials (what
//! `mx2 inbox passwd` uses). `PUT` stores an argon2id hash for the address's mailbox
//! (hashed by the caller: the password itself never crosses the API), `DELETE` removes it.
//! Operators only (a tenant's token gets 404, `access.rs`).

use super::Admin;
use super::api::{error, store_error};
use super::bodies::body;
use crate::inbox::auth::is_argon2id;
use crate::queue::inbox::mailbox_key;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::put;
use axum::{Json, Router};
use serde_json::json;
use std::sync::Arc;

pub fn routes() -> Router<Arc<Admin>> {
    Router::new().route("/api/v1/inbox/users/{address}", put(set).delete(remove))
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Credential {
    hash: String,
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
