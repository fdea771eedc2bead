//! What the registry's endpoints (domains, tenants) share: JSON bodies read with a hint of
//! what was expected, keys that may be absent, `null` or set, and the registry's refusals
//! as answers.

use super::api::error;
use crate::registry::ops::OpError;
use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;

/// A registry refusal as an answer.
pub(super) fn op_error(e: OpError) -> Response {
    let code = match &e {
        OpError::NotFound(_) => StatusCode::NOT_FOUND,
        OpError::Exists(_) | OpError::Busy => StatusCode::CONFLICT,
        OpError::Invalid(_) => StatusCode::BAD_REQUEST,
        OpError::Store(_) => StatusCode::SERVICE_UNAVAILABLE,
    };
    error(code, &e.to_string())
}

/// The answer a request gets instead, when a step refuses it.
pub(super) type Refused = Box<Response>;

/// A JSON body, or the answer saying what was expected.
pub(super) fn body<T>(b: Result<Json<T>, JsonRejection>, expected: &str) -> Result<T, Refused> {
    b.map(|Json(t)| t).map_err(|e| {
        Box::new(error(
            StatusCode::BAD_REQUEST,
            &format!("{e}: send {expected}"),
        ))
    })
}

/// Accepts a key that may be absent (None), `null` (Some(None)) or a value.
pub(super) fn present<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_map_to_statuses() {
        let code = |e| op_error(e).status();
        assert_eq!(code(OpError::NotFound("x".into())), StatusCode::NOT_FOUND);
        assert_eq!(code(OpError::Exists("x".into())), StatusCode::CONFLICT);
        assert_eq!(code(OpError::Busy), StatusCode::CONFLICT);
        assert_eq!(code(OpError::Invalid("x".into())), StatusCode::BAD_REQUEST);
        assert_eq!(
            code(OpError::Store(crate::queue::StoreError::Closed)),
            StatusCode::SERVICE_UNAVAILABLE
        );
    }

    #[derive(Deserialize)]
    struct Change {
        #[serde(default, deserialize_with = "present")]
        tenant: Option<Option<String>>,
    }

    #[test]
    fn absent_null_and_set_are_three_things() {
        let c: Change = serde_json::from_str("{}").unwrap();
        assert_eq!(c.tenant, None);
        let c: Change = serde_json::from_str(r#"{"tenant": null}"#).unwrap();
        assert_eq!(c.tenant, Some(None));
        let c: Change = serde_json::from_str(r#"{"tenant": "acme"}"#).unwrap();
        assert_eq!(c.tenant, Some(Some("acme".into())));
    }
}
