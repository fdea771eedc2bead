//! `/api/v1/tenants`: the customers of a backup-MX service, for the operator only: add,
//! change and remove them, and make and revoke their API tokens. A token is shown once,
//! when it is made; only its hash is kept, and no answer ever carries a hash.

use super::Admin;
use super::api::error;
use super::bodies::{body, op_error, present};
use crate::registry::StoredTenant;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::sync::Arc;

pub fn routes() -> Router<Arc<Admin>> {
    Router::new()
        .route("/api/v1/tenants", get(list).post(add))
        .route(
            "/api/v1/tenants/{name}",
            get(show).patch(change).delete(remove),
        )
        .route("/api/v1/tenants/{name}/tokens", post(token))
        .route("/api/v1/tenants/{name}/tokens/{id}", delete(revoke))
}

/// A token as listed: its id and age, never its hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TokenView {
    pub id: String,
    pub created_ms: i64,
}

/// A tenant as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TenantView {
    pub name: String,
    pub webhook: Option<String>,
    pub alert_to: Option<String>,
    pub created_ms: i64,
    /// Its stored domains.
    pub domains: Vec<String>,
    pub tokens: Vec<TokenView>,
}

fn view(t: &StoredTenant, domains: Vec<String>) -> TenantView {
    TenantView {
        name: t.name.clone(),
        webhook: t.record.webhook.clone(),
        alert_to: t.record.alert_to.clone(),
        created_ms: t.record.created_ms,
        domains,
        tokens: t
            .record
            .tokens
            .iter()
            .map(|k| TokenView {
                id: k.id.clone(),
                created_ms: k.created_ms,
            })
            .collect(),
    }
}

/// The tenant as the registry has it now, with its domains.
fn current(a: &Admin, t: &StoredTenant) -> TenantView {
    view(t, a.registry.snapshot().tenant_domains(&t.name))
}

async fn list(State(a): State<Arc<Admin>>) -> Response {
    let snapshot = a.registry.snapshot();
    let tenants: Vec<TenantView> = snapshot
        .tenants
        .values()
        .map(|t| view(t, snapshot.tenant_domains(&t.name)))
        .collect();
    Json(json!({ "tenants": tenants })).into_response()
}

async fn show(State(a): State<Arc<Admin>>, Path(name): Path<String>) -> Response {
    let name = match crate::registry::ops::tenant_name(&name) {
        Ok(n) => n,
        Err(e) => return op_error(e),
    };
    match a.registry.tenant(&name) {
        Some(t) => Json(current(&a, &t)).into_response(),
        None => error(StatusCode::NOT_FOUND, &format!("no tenant {name}")),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Add {
    name: String,
    webhook: Option<String>,
    alert_to: Option<String>,
}

async fn add(State(a): State<Arc<Admin>>, b: Result<Json<Add>, JsonRejection>) -> Response {
    let b = match body(
        b,
        r#"{"name": "acme", "webhook": "https://…", "alert_to": "ops@acme.example"}"#,
    ) {
        Ok(b) => b,
        Err(r) => return *r,
    };
    match a.registry.add_tenant(&b.name, b.webhook, b.alert_to).await {
        Ok(t) => (StatusCode::CREATED, Json(current(&a, &t))).into_response(),
        Err(e) => op_error(e),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Change {
    #[serde(default, deserialize_with = "present")]
    webhook: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    alert_to: Option<Option<String>>,
}

async fn change(
    State(a): State<Arc<Admin>>,
    Path(name): Path<String>,
    b: Result<Json<Change>, JsonRejection>,
) -> Response {
    let b = match body(b, r#"{"webhook": "https://…", "alert_to": null}"#) {
        Ok(b) => b,
        Err(r) => return *r,
    };
    if b.webhook.is_none() && b.alert_to.is_none() {
        return error(
            StatusCode::BAD_REQUEST,
            "nothing to change: give `webhook` or `alert_to` (null clears one)",
        );
    }
    match a.registry.set_tenant(&name, b.webhook, b.alert_to).await {
        Ok(t) => Json(current(&a, &t)).into_response(),
        Err(e) => op_error(e),
    }
}

async fn remove(State(a): State<Arc<Admin>>, Path(name): Path<String>) -> Response {
    match a.registry.remove_tenant(&name).await {
        Ok(()) => Json(json!({ "removed": name.trim().to_ascii_lowercase() })).into_response(),
        Err(e) => op_error(e),
    }
}

/// Said with a new token when the admin port has no operator token: a tenant's token then
/// narrows what its holder sees, but anyone may leave it out and act as the operator.
const NO_OPERATOR_TOKEN: &str = "this server has no operator token (admin.token_file): anyone who reaches the admin port without a token acts as the operator; set one before giving tenants access";

async fn token(State(a): State<Arc<Admin>>, Path(name): Path<String>) -> Response {
    match a.registry.add_token(&name).await {
        Ok((id, token)) => {
            let mut out = json!({ "id": id, "token": token });
            if a.token.is_none() {
                out["warning"] = json!(NO_OPERATOR_TOKEN);
            }
            (StatusCode::CREATED, Json(out)).into_response()
        }
        Err(e) => op_error(e),
    }
}

async fn revoke(State(a): State<Arc<Admin>>, Path((name, id)): Path<(String, String)>) -> Response {
    match a.registry.remove_token(&name, &id).await {
        Ok(()) => Json(json!({ "revoked": id })).into_response(),
        Err(e) => op_error(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::records::{TenantRecord, TokenRecord};

    #[test]
    fn a_tenant_is_shown_without_token_hashes() {
        let t = StoredTenant {
            name: "acme".into(),
            record: TenantRecord {
                webhook: None,
                alert_to: Some("ops@acme.example".into()),
                tokens: vec![TokenRecord {
                    id: "ab12cd34".into(),
                    sha256: "f".repeat(64),
                    created_ms: 5,
                }],
                created_ms: 1,
            },
            rev: 3,
        };
        let json = serde_json::to_string(&view(&t, vec!["a.example".into()])).unwrap();
        assert!(
            json.contains("ab12cd34") && json.contains("a.example"),
            "{json}"
        );
        assert!(
            !json.contains(&"f".repeat(64)) && !json.contains("sha256"),
            "{json}"
        );
    }
}
