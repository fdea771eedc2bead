//! `/api/v1/domains`: the domains mx2 backs up, from the configuration file and from the
//! registry (added at run time), each with its state, owner, settings, limits, ownership
//! challenge and what the queue holds for it; adding, changing and removing stored domains,
//! their ownership check, and replacing their recipient lists. A tenant sees and checks its
//! own stored domains only and changes nothing but their recipient lists.

use super::Admin;
use super::access::{Access, NOT_FOUND};
use super::api::error;
use super::bodies::{Refused, body, op_error, present};
use super::domain_view::{DomainView, QueueUses, stored_view, views};
use super::scope::Scope;
use crate::registry::ops::{AddDomain, OpError, domain_name};
use axum::body::Bytes;
use axum::extract::rejection::JsonRejection;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Extension, Json, Router};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use std::collections::HashMap;
use std::sync::Arc;

/// The largest recipient list one upload takes.
const MAX_UPLOAD: usize = 32 << 20;

pub fn routes() -> Router<Arc<Admin>> {
    Router::new()
        .route("/api/v1/domains", get(list).post(add))
        .route(
            "/api/v1/domains/{name}",
            get(show).patch(change).delete(remove),
        )
        .route("/api/v1/domains/{name}/verify", post(verify))
        .route(
            "/api/v1/domains/{name}/recipients",
            put(recipients).layer(DefaultBodyLimit::max(MAX_UPLOAD)),
        )
}

/// The domain a path names, when `scope` may see it (a tenant: one of its own).
fn named(scope: &Scope, name: &str) -> Result<String, Refused> {
    match (domain_name(name), scope) {
        (Ok(n), _) if scope.covers(&n) => Ok(n),
        (_, Scope::Domains(_)) => Err(Box::new(error(StatusCode::NOT_FOUND, NOT_FOUND))),
        (Ok(n), Scope::All) => Ok(n),
        (Err(e), Scope::All) => Err(Box::new(op_error(e))),
    }
}

/// What the queue holds, by domain.
async fn queue(a: &Admin) -> Result<QueueUses, Refused> {
    a.store
        .depth()
        .await
        .map(QueueUses::of)
        .map_err(|e| Box::new(error(StatusCode::SERVICE_UNAVAILABLE, &e.to_string())))
}

async fn list(State(a): State<Arc<Admin>>, Extension(who): Extension<Access>) -> Response {
    let queue = match queue(&a).await {
        Ok(d) => d,
        Err(r) => return *r,
    };
    Json(json!({ "domains": views(&a, &a.scope(&who), &queue) })).into_response()
}

async fn show(
    State(a): State<Arc<Admin>>,
    Extension(who): Extension<Access>,
    Path(name): Path<String>,
) -> Response {
    let scope = a.scope(&who);
    let name = match named(&scope, &name) {
        Ok(n) => n,
        Err(r) => return *r,
    };
    let queue = match queue(&a).await {
        Ok(d) => d,
        Err(r) => return *r,
    };
    // The stored entry when there is one (what this API manages), else the file's.
    let mut found = views(&a, &scope, &queue)
        .into_iter()
        .filter(|v| v.name == name)
        .collect::<Vec<_>>();
    match found.pop() {
        Some(v) => Json(v).into_response(),
        None if scope == Scope::All => error(StatusCode::NOT_FOUND, &format!("no domain {name}")),
        None => error(StatusCode::NOT_FOUND, NOT_FOUND),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Add {
    name: String,
    #[serde(default)]
    settings: Map<String, Value>,
    tenant: Option<String>,
    #[serde(default)]
    verified: bool,
}

/// What a new domain's owner publishes in DNS (the ownership challenge while it is pending,
/// and an MX record naming this server), and what comes next, in words.
fn next_steps(hostname: &str, v: &DomainView) -> (Vec<String>, String) {
    let n = &v.name;
    let mut publish = Vec::new();
    if let Some(c) = &v.challenge {
        publish.push(format!("{}. IN TXT \"{}\"", c.record, c.value));
    }
    publish.push(format!("{n}. IN MX 20 {}.", hostname.trim_end_matches('.')));
    let mx = "the MX record's preference (20 here) must be a larger number than the primary's";
    let next = match &v.challenge {
        Some(_) => format!(
            "{n} is pending: mail for it is refused until the TXT record is published and `mx2 domain verify {n}` finds it; {mx}"
        ),
        None => format!("{n} is active: mail for it is accepted now; {mx}"),
    };
    (publish, next)
}

async fn add(State(a): State<Arc<Admin>>, b: Result<Json<Add>, JsonRejection>) -> Response {
    let b = match body(
        b,
        r#"{"name": "example.org", "settings": {"primary": ["mail.example.org:25"]}, "tenant": "acme", "verified": false}"#,
    ) {
        Ok(b) => b,
        Err(r) => return *r,
    };
    let added = a
        .registry
        .add_domain(AddDomain {
            name: b.name,
            settings: b.settings,
            tenant: b.tenant,
            verified: b.verified,
        })
        .await;
    match added {
        Ok(d) => {
            let queue = queue(&a).await.unwrap_or_default();
            let v = stored_view(&d, &a.registry.snapshot(), &queue);
            let (publish, next) = next_steps(&a.hostname, &v);
            let mut out = serde_json::to_value(&v).unwrap_or_default();
            out["publish"] = json!(publish);
            out["next"] = json!(next);
            (StatusCode::CREATED, Json(out)).into_response()
        }
        Err(e) => op_error(e),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Change {
    #[serde(default)]
    settings: Map<String, Value>,
    #[serde(default, deserialize_with = "present")]
    tenant: Option<Option<String>>,
}

async fn change(
    State(a): State<Arc<Admin>>,
    Path(name): Path<String>,
    b: Result<Json<Change>, JsonRejection>,
) -> Response {
    let b = match body(
        b,
        r#"{"settings": {"max_queue_bytes": "2GB", "lifetime": null}, "tenant": "acme"}"#,
    ) {
        Ok(b) => b,
        Err(r) => return *r,
    };
    if b.settings.is_empty() && b.tenant.is_none() {
        return error(
            StatusCode::BAD_REQUEST,
            "nothing to change: give `settings` (a key set to null removes it) or `tenant`",
        );
    }
    match a.registry.set_domain(&name, &b.settings, b.tenant).await {
        Ok(d) => {
            let queue = queue(&a).await.unwrap_or_default();
            Json(stored_view(&d, &a.registry.snapshot(), &queue)).into_response()
        }
        Err(e) => op_error(e),
    }
}

async fn remove(
    State(a): State<Arc<Admin>>,
    Path(name): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let purge = match q.get("purge").map(|v| v.trim()) {
        None | Some("" | "false" | "0" | "no") => false,
        Some("true" | "1" | "yes") => true,
        Some(other) => {
            return error(
                StatusCode::BAD_REQUEST,
                &format!("purge `{other}`: use true or false"),
            );
        }
    };
    if let Some(k) = q.keys().find(|k| *k != "purge") {
        return error(
            StatusCode::BAD_REQUEST,
            &format!("unknown parameter `{k}`: use purge"),
        );
    }
    let name = match domain_name(&name) {
        Ok(n) => n,
        Err(e) => return op_error(e),
    };
    // Removed first, so no new mail for it arrives while its queue is purged.
    if let Err(e) = a.registry.remove_domain(&name).await {
        return op_error(e);
    }
    let store = |e: crate::queue::StoreError| {
        error(
            StatusCode::SERVICE_UNAVAILABLE,
            &format!("{name} is removed, but: {e}"),
        )
    };
    if purge {
        match a.store.purge_domain(&name).await {
            Ok(n) => Json(json!({ "removed": name, "purged": n })).into_response(),
            Err(e) => store(e),
        }
    } else {
        match a.store.depth().await {
            Ok(depth) => {
                let held = QueueUses::of(depth).get(&name).messages;
                Json(json!({ "removed": name, "held": held })).into_response()
            }
            Err(e) => store(e),
        }
    }
}

async fn verify(
    State(a): State<Arc<Admin>>,
    Extension(who): Extension<Access>,
    Path(name): Path<String>,
) -> Response {
    let name = match named(&a.scope(&who), &name) {
        Ok(n) => n,
        Err(r) => return *r,
    };
    match a.registry.verify(&a.dns, &name).await {
        Ok(v) => Json(v).into_response(),
        Err(e) => op_error(e),
    }
}

/// An uploaded recipient list as addresses: one per line, `#` starts a comment, blank lines
/// skipped, `<>` around an address dropped (`@domain` stands for every address there).
pub fn recipient_lines(text: &str) -> Vec<String> {
    text.lines()
        .map(|l| l.split('#').next().unwrap_or("").trim())
        .map(|l| l.trim_start_matches('<').trim_end_matches('>').trim())
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

async fn recipients(
    State(a): State<Arc<Admin>>,
    Extension(who): Extension<Access>,
    Path(name): Path<String>,
    headers: HeaderMap,
    upload: Bytes,
) -> Response {
    let name = match named(&a.scope(&who), &name) {
        Ok(n) => n,
        Err(r) => return *r,
    };
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|t| t.to_str().ok())
        .is_some_and(|t| t.trim_start().starts_with("application/json"));
    let addresses = if json {
        match serde_json::from_slice::<Vec<String>>(&upload) {
            Ok(list) => list,
            Err(e) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    &format!(
                        "{e}: send a JSON array of addresses, or text/plain with one per line"
                    ),
                );
            }
        }
    } else {
        match std::str::from_utf8(&upload) {
            Ok(text) => recipient_lines(text),
            Err(_) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "the list is not UTF-8 text: send one address per line",
                );
            }
        }
    };
    let count = addresses.len();
    match a.registry.set_recipients(&name, addresses).await {
        Ok(_) => Json(json!({ "domain": name, "recipients": count })).into_response(),
        Err(OpError::NotFound(_)) if a.scope(&who) != Scope::All => {
            error(StatusCode::NOT_FOUND, NOT_FOUND)
        }
        Err(e) => op_error(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uploaded_lists_read_one_address_a_line() {
        let text =
            "# our users\nalice@a.example\n\n  <bob@a.example>  # the boss\n@b.a.example\n#\n";
        assert_eq!(
            recipient_lines(text),
            vec!["alice@a.example", "bob@a.example", "@b.a.example"]
        );
        assert!(recipient_lines("").is_empty());
    }

    #[test]
    fn a_tenant_names_only_its_own_domains() {
        let mine = Scope::Domains(["a.example".to_string()].into());
        assert_eq!(named(&mine, "A.example.").unwrap(), "a.example");
        assert_eq!(
            named(&mine, "b.example").unwrap_err().status(),
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            named(&mine, "not a name").unwrap_err().status(),
            StatusCode::NOT_FOUND
        );
        assert_eq!(named(&Scope::All, "b.example").unwrap(), "b.example");
        assert_eq!(
            named(&Scope::All, "not a name").unwrap_err().status(),
            StatusCode::BAD_REQUEST
        );
    }

    #[test]
    fn a_new_domain_is_told_what_to_publish() {
        let mut v = DomainView {
            name: "a.example".into(),
            source: super::super::domain_view::Source::Store,
            state: crate::registry::records::DomainState::Pending,
            tenant: None,
            shadowed: false,
            settings: None,
            limits: None,
            invalid: None,
            challenge: Some(super::super::domain_view::Challenge {
                record: "_mx2-challenge.a.example".into(),
                value: "mx2-verify-00ff".into(),
            }),
            audit: None,
            created_ms: None,
            verified_ms: None,
            verified_by: None,
            queue: Default::default(),
        };
        let (publish, next) = next_steps("mx2.example.net.", &v);
        assert_eq!(
            publish,
            vec![
                "_mx2-challenge.a.example. IN TXT \"mx2-verify-00ff\"",
                "a.example. IN MX 20 mx2.example.net."
            ]
        );
        assert!(
            next.contains("pending") && next.contains("mx2 domain verify a.example"),
            "{next}"
        );
        v.challenge = None;
        let (publish, next) = next_steps("mx2.example.net", &v);
        assert_eq!(publish, vec!["a.example. IN MX 20 mx2.example.net."]);
        assert!(next.contains("active"), "{next}");
    }

    #[test]
    fn a_change_takes_known_keys_and_null_for_nobody() {
        let c: Change = serde_json::from_str(r#"{"tenant": null}"#).unwrap();
        assert_eq!(c.tenant, Some(None));
        assert!(c.settings.is_empty());
        assert!(serde_json::from_str::<Change>(r#"{"colour": 1}"#).is_err());
    }
}
