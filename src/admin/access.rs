//! Who a request acts for, and what a tenant may ask at all. The operator's token (or no
//! token configured) gives the whole API; a tenant's token (made with `mx2 tenant token`)
//! gives a short list of requests about its own domains and their mail. Everything else a
//! tenant asks answers `404 {"error": "not found"}`, as if it did not exist. The per-item
//! checks (this message, this domain) are made where the item is read: [`super::scope`].

use axum::http::Method;

/// Who a request acts for; every request past authentication carries one (an extension).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Access {
    /// The operator: everything.
    Operator,
    /// A tenant, by name: its own domains and their mail only.
    Tenant(String),
}

/// The answer to anything a tenant may not see, the same whatever the reason.
pub const NOT_FOUND: &str = "not found";

/// The message actions a tenant may take on its own mail.
const TENANT_ACTIONS: [&str; 5] = ["flush", "hold", "release", "delete", "bounce"];

/// Whether a tenant may make this request at all (which of its items it may reach is
/// checked by the handler). The list is closed: a request not named here is refused.
pub fn tenant_may(method: &Method, path: &str) -> bool {
    let read = *method == Method::GET || *method == Method::HEAD;
    let segments: Vec<&str> = path.split('/').skip(1).collect();
    match segments.as_slice() {
        // The dashboard.
        [""] => read,
        ["api", "v1", "status" | "identity" | "events" | "domains"] => read,
        ["api", "v1", "queue"] | ["api", "v1", "queue", "count"] => read,
        ["api", "v1", "queue", "actions"] => *method == Method::POST,
        ["api", "v1", "queue", _id] => read || *method == Method::DELETE,
        ["api", "v1", "queue", _id, "eml"] => read,
        ["api", "v1", "queue", _id, action] => {
            *method == Method::POST && TENANT_ACTIONS.contains(action)
        }
        ["api", "v1", "flush"] => *method == Method::POST,
        ["api", "v1", "domains", _name] => read,
        ["api", "v1", "domains", _name, "verify"] => *method == Method::POST,
        ["api", "v1", "domains", _name, "recipients"] => *method == Method::PUT,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenants_reach_only_their_part_of_the_api() {
        let may = |m: Method, p: &str| tenant_may(&m, p);
        for p in [
            "/",
            "/api/v1/status",
            "/api/v1/identity",
            "/api/v1/events",
            "/api/v1/queue",
            "/api/v1/queue/count",
            "/api/v1/queue/0191abc",
            "/api/v1/queue/0191abc/eml",
            "/api/v1/domains",
            "/api/v1/domains/a.example",
        ] {
            assert!(may(Method::GET, p), "GET {p}");
            assert!(may(Method::HEAD, p), "HEAD {p}");
            assert!(!may(Method::POST, p), "POST {p}");
        }
        assert!(may(Method::POST, "/api/v1/queue/actions"));
        assert!(may(Method::POST, "/api/v1/queue/0191abc/hold"));
        assert!(may(Method::POST, "/api/v1/queue/0191abc/bounce"));
        assert!(!may(Method::POST, "/api/v1/queue/0191abc/explode"));
        assert!(may(Method::DELETE, "/api/v1/queue/0191abc"));
        assert!(may(Method::POST, "/api/v1/flush"));
        assert!(may(Method::POST, "/api/v1/domains/a.example/verify"));
        assert!(may(Method::PUT, "/api/v1/domains/a.example/recipients"));
        for (m, p) in [
            (Method::GET, "/metrics"),
            (Method::POST, "/api/v1/reload"),
            (Method::POST, "/api/v1/domains"),
            (Method::PATCH, "/api/v1/domains/a.example"),
            (Method::DELETE, "/api/v1/domains/a.example"),
            (Method::GET, "/api/v1/tenants"),
            (Method::POST, "/api/v1/tenants"),
            (Method::POST, "/api/v1/tenants/acme/tokens"),
            (Method::GET, "/api/v1/domains/a.example/recipients"),
            (Method::GET, "/api/v1/queue/actions"),
            (Method::POST, "/api/v1/queue/0191abc/eml"),
            (Method::GET, "/api/v1/status/"),
            (Method::GET, "/api/v2/status"),
            (Method::GET, ""),
        ] {
            assert!(!may(m.clone(), p), "{m} {p}");
        }
    }
}
