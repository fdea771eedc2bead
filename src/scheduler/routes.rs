//! The route table: which [`Route`] each domain delivers through, built from the config's
//! domains (sharing a route where primaries, TLS policy and credentials agree), merged on
//! reload so unchanged routes keep their health and waiting jobs, and extended on the fly for
//! domains mx2 does not back up (where its own notifications go).
//!
//! May call `Route`, `ClientTls` and the MX resolver; must never read files (credentials come
//! loaded with the config), touch the queue or open a connection.

use super::Scheduler;
use super::concurrency::Concurrency;
use super::route::Route;
use crate::config::{Config, DomainConfig, DomainRoute, TlsMode, TlsPolicy};
use crate::delivery::auth::Credentials;
use crate::delivery::mx::{self, NoRoute, RouteKind, Target};
use crate::tls::ClientTls;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

/// Domain → route for the configured domains. Domains with the same static primaries, TLS
/// policy and credentials share one route; MX domains have their own. Fails when a domain's
/// TLS settings (CA file) cannot be loaded.
pub(super) fn routes_for(config: &Config) -> Result<HashMap<String, Arc<Route>>, String> {
    let mut by_key: HashMap<String, (RouteKind, &DomainConfig, Vec<String>)> = HashMap::new();
    for d in &config.domains {
        let kind = match &d.route {
            DomainRoute::Primary(hosts) => RouteKind::Static(hosts.clone()),
            DomainRoute::Mx => RouteKind::Mx {
                domain: d.name.clone(),
                backed_up: true,
            },
        };
        let mut key = Route::key_of(&kind);
        // The route's name stays `mx:DOMAIN` under the MX routes' default policy.
        let usual = match d.route {
            DomainRoute::Mx => TlsPolicy {
                mode: TlsMode::mx_default(),
                ..TlsPolicy::default()
            },
            DomainRoute::Primary(_) => TlsPolicy::default(),
        };
        if d.tls != usual {
            key.push_str(&format!("|{:?}", d.tls));
        }
        if let Some(a) = &d.auth {
            key.push_str(&format!("|auth={}", a.user));
        }
        by_key
            .entry(key)
            .or_insert_with(|| (kind, d, Vec::new()))
            .2
            .push(d.name.clone());
    }
    let mut routes = HashMap::new();
    // One TLS client configuration per policy: building one for each of 10,000 routes would
    // take seconds.
    let mut tls_for: HashMap<String, ClientTls> = HashMap::new();
    for (_, (kind, domain, domains)) in by_key {
        let policy_key = format!("{:?}", domain.tls);
        let tls = match tls_for.get(&policy_key) {
            Some(t) => t.clone(),
            None => {
                let t = ClientTls::new(&domain.tls)
                    .map_err(|e| format!("domain {}: {e}", domains.join(", ")))?;
                tls_for.insert(policy_key, t.clone());
                t
            }
        };
        let auth = domain.auth.as_ref().map(|a| Credentials {
            user: a.user.clone(),
            password: a.password.clone(),
        });
        let concurrency = Concurrency::new(
            config.delivery.initial_connections_per_primary,
            config.delivery.max_connections_per_primary,
        );
        let route = Arc::new(Route::new(kind, domains.clone(), tls, concurrency).with_auth(auth));
        for d in domains {
            routes.insert(d, route.clone());
        }
    }
    Ok(routes)
}

/// The table after a reload: a fresh route whose key, credentials and domains match an old
/// one is replaced by the old one, which keeps its health and its waiting jobs.
pub(super) fn merge(
    old: &HashMap<String, Arc<Route>>,
    fresh: HashMap<String, Arc<Route>>,
) -> HashMap<String, Arc<Route>> {
    let old: HashMap<&str, &Arc<Route>> = old.values().map(|r| (r.key.as_str(), r)).collect();
    fresh
        .into_iter()
        .map(|(domain, route)| {
            let keep = old
                .get(route.key.as_str())
                .filter(|o| o.auth == route.auth && o.domains == route.domains)
                .map(|o| Arc::clone(*o));
            (domain, keep.unwrap_or(route))
        })
        .collect()
}

impl Scheduler {
    /// Every route once (routes are shared between domains).
    pub(super) fn all_routes(&self) -> Vec<Arc<Route>> {
        let routes = self.routes.lock().unwrap_or_else(|p| p.into_inner());
        let mut seen = HashSet::new();
        routes
            .values()
            .filter(|r| seen.insert(r.key.clone()))
            .cloned()
            .collect()
    }

    /// Jobs waiting in route queues.
    pub(super) fn queued(&self) -> usize {
        self.all_routes().iter().map(|r| r.queued()).sum()
    }

    /// The route for a domain. A domain mx2 does not back up gets an MX route of its own: only
    /// mail mx2 generated itself (delivery status notifications) or mail held for a domain since
    /// removed from the config is addressed there. Its TLS is `auto` (DANE where the
    /// destination publishes it, else opportunistic).
    pub(super) fn route_for(&self, domain: &str) -> Arc<Route> {
        let mut routes = self.routes.lock().unwrap_or_else(|p| p.into_inner());
        routes
            .entry(domain.to_string())
            .or_insert_with(|| {
                Arc::new(Route::new(
                    RouteKind::Mx {
                        domain: domain.to_string(),
                        backed_up: false,
                    },
                    vec![domain.to_string()],
                    self.default_tls.clone(),
                    Concurrency::new(
                        self.settings.initial_connections_per_primary,
                        self.settings.max_connections_per_primary,
                    ),
                ))
            })
            .clone()
    }

    /// Where a route delivers now.
    /// Whether delivery finds the primary of `domain` up (drills wait while it is down).
    pub fn primary_is_up(&self, domain: &str) -> bool {
        self.route_for(domain).is_up()
    }

    pub(super) async fn targets(&self, route: &Route) -> Result<Vec<Target>, NoRoute> {
        mx::resolve(
            &route.kind,
            route.tls.mode,
            &self.dns,
            &self.identity,
            self.mx_port,
        )
        .await
    }
}
