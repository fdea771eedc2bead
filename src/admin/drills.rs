//! Fire drills over the API (docs/api.md): run one now (`POST /api/v1/drills/DOMAIN`), a
//! domain's last results (`GET /api/v1/drills/DOMAIN`), every domain's last drill
//! (`GET /api/v1/drills`). The operator's only: a drill sends mail.

use super::Admin;
use super::api::{error, store_error};
use crate::drill::report::{Drill, Trigger};
use crate::drill::{KEPT, Refusal};
use axum::Json;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;
use std::collections::HashMap;
use std::sync::Arc;

pub fn routes() -> Router<Arc<Admin>> {
    Router::new()
        .route("/api/v1/drills", get(summaries))
        .route("/api/v1/drills/{domain}", get(history).post(run))
}

/// Runs a drill now and answers with its result (200 whether it passed or not).
async fn run(State(a): State<Arc<Admin>>, Path(domain): Path<String>) -> Response {
    match a.driller.run(&domain, Trigger::Manual).await {
        Ok(d) => Json(d).into_response(),
        Err(r) => {
            let code = match r {
                Refusal::NotBackedUp(_) => StatusCode::NOT_FOUND,
                Refusal::Running(_) => StatusCode::CONFLICT,
                Refusal::TooSoon { .. } => StatusCode::TOO_MANY_REQUESTS,
            };
            error(code, &r.to_string())
        }
    }
}

/// A domain's last drills, newest first (`limit`, at most [`KEPT`]).
async fn history(
    State(a): State<Arc<Admin>>,
    Path(domain): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let domain = crate::queue::domain_key(&domain);
    let limit = match q.get("limit").map(|v| v.parse::<usize>()) {
        None => KEPT,
        Some(Ok(n)) if (1..=KEPT).contains(&n) => n,
        Some(_) => {
            return error(
                StatusCode::BAD_REQUEST,
                &format!("limit: a number from 1 to {KEPT}"),
            );
        }
    };
    if !a.driller.domains().contains_key(&domain) {
        return error(
            StatusCode::NOT_FOUND,
            &format!("{domain} is not a domain this server backs up"),
        );
    }
    match a.store.drills(&domain, limit).await {
        Ok(rows) => {
            let drills: Vec<Drill> = rows
                .iter()
                .filter_map(|r| serde_json::from_str(&r.result).ok())
                .collect();
            Json(json!({ "domain": domain, "drills": drills })).into_response()
        }
        Err(e) => store_error(e),
    }
}

/// Every domain's last drill that ran, and when one last passed.
async fn summaries(State(a): State<Arc<Admin>>) -> Response {
    match a.store.drill_summaries().await {
        Ok(s) => Json(json!({
            "drills": s.iter().map(|s| json!({
                "domain": s.last.domain,
                "at_ms": s.last.at_ms,
                "outcome": s.last.outcome,
                "duration_ms": s.last.duration_ms,
                "last_passed_ms": s.last_passed_ms,
            })).collect::<Vec<_>>()
        }))
        .into_response(),
        Err(e) => store_error(e),
    }
}
