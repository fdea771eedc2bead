//! The actions on queued mail (docs/api.md, "Actions"): flush, hold, release, delete and
//! bounce, on one message, on a batch of ids, or (flush) on whole domains. A tenant acts on
//! its own mail only, and never on a message that also waits for another domain's
//! recipients, except to flush it ([`super::scope`]).

use super::Admin;
use super::access::Access;
use super::api::{error, store_error};
use super::scope::Scope;
use crate::queue::{OperatorAction, StoreError};
use axum::extract::{Path, Query, State as Ctx};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::json;
use std::collections::HashMap;
use std::sync::Arc;

/// The most message ids one batch action takes.
pub const MAX_BATCH: usize = 10_000;

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

pub(super) async fn act_one(
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

pub(super) async fn delete_one(
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
pub(super) struct Batch {
    action: String,
    ids: Vec<String>,
}

pub(super) async fn batch(
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
pub(super) async fn flush(
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

#[cfg(test)]
mod tests {
    use super::*;

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
