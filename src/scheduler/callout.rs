//! What the recipient policy asks of the scheduler: is a domain's primary up, and does it
//! know an address (a callout: MAIL FROM:<>, RCPT TO, RSET, QUIT). Also the health watch for
//! standby domains, whose state matters even when no mail flows.
//!
//! May call the route table, `open` and `probe` (a failed standby check starts an outage);
//! must never change the queue or record a recipient's outcome.

use super::Scheduler;
use crate::delivery::mx::NoRoute;
use crate::policy::recipients::{CalloutResult, Primaries};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tracing::warn;

impl Primaries for Scheduler {
    fn is_up(&self, domain: &str) -> bool {
        self.route_for(domain).is_up()
    }

    fn callout<'a>(
        &'a self,
        domain: &'a str,
        address: &'a str,
    ) -> Pin<Box<dyn Future<Output = CalloutResult> + Send + 'a>> {
        Box::pin(async move {
            let route = self.route_for(domain);
            let s = &self.settings;
            let ask = async {
                let targets = match self.targets(&route).await {
                    Ok(t) => t,
                    Err(NoRoute::Hold(r)) => return CalloutResult::Unknown(r),
                    Err(NoRoute::Fail(r)) => return CalloutResult::DoesNotExist(r.one_line()),
                };
                let mut c = match self.open(&route, &targets, &s.probe_timeouts, false).await {
                    Ok(c) => c,
                    Err(e) => return CalloutResult::Unknown(e.to_string()),
                };
                let t = s.probe_timeouts.command;
                let mut ask_one = async |line: String| -> Result<crate::smtp::Reply, String> {
                    c.send(line.as_bytes(), "callout")
                        .await
                        .map_err(|e| e.to_string())?;
                    c.read_reply(t, "a callout reply")
                        .await
                        .map_err(|e| e.to_string())
                };
                let result = match ask_one("MAIL FROM:<>\r\n".into()).await {
                    Ok(m) if m.is_positive() => {
                        match ask_one(format!("RCPT TO:<{address}>\r\n")).await {
                            Ok(r) if r.is_positive() => CalloutResult::Exists,
                            Ok(r) if r.is_permanent() => CalloutResult::DoesNotExist(r.one_line()),
                            Ok(r) => CalloutResult::Unknown(r.one_line()),
                            Err(e) => CalloutResult::Unknown(e),
                        }
                    }
                    Ok(m) => CalloutResult::Unknown(format!("MAIL FROM:<> refused: {m}")),
                    Err(e) => CalloutResult::Unknown(e),
                };
                let _ = ask_one("RSET\r\n".into()).await;
                c.quit().await;
                result
            };
            tokio::time::timeout(s.callout_timeout, ask)
                .await
                .unwrap_or_else(|_| CalloutResult::Unknown("callout timed out".into()))
        })
    }
}

impl Scheduler {
    /// Checks the primaries of standby domains every `interval` while they are up, so the
    /// standby answer follows the primary's real state; a failed check marks the route down
    /// and starts its probe.
    pub async fn watch_standby(
        self: Arc<Self>,
        domains: Vec<String>,
        interval: Duration,
        mut shutdown: crate::shutdown::Shutdown,
    ) {
        loop {
            tokio::select! {
                _ = shutdown.wait() => return,
                _ = tokio::time::sleep(interval) => {}
            }
            for domain in &domains {
                let route = self.route_for(domain);
                if !route.is_up() {
                    continue;
                }
                let reachable = self.check(&route, false).await;
                if !reachable && route.mark_down() == super::route::Transition::WentDown {
                    warn!(primary = %route.key, "primary is down (standby check); accepting mail for its domains");
                    self.began_outage(&route, "the standby check found it unreachable")
                        .await;
                }
            }
        }
    }
}
