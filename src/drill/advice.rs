//! What each finding of a fire drill means and how to fix it, in words: the primary's reply
//! to the relayed drill message, a refusal of the canary at mx2, a host that cannot be
//! reached. Pure: replies and errors in, (finding, advice) out.

use crate::delivery::reply::RemoteReply;

/// A finding and what to do about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub detail: String,
    pub advice: Option<String>,
}

fn finding(detail: String, advice: &str) -> Finding {
    Finding {
        detail,
        advice: Some(advice.to_string()),
    }
}

/// The primary's answer to the drill message mx2 relayed to it.
pub fn handoff(reply: &RemoteReply, rcpt: &str) -> Finding {
    let class = reply.enhanced.as_ref().map(|e| (e.class, e.subject));
    if reply.code / 100 == 2 {
        return Finding {
            detail: format!("the primary took it: {reply}"),
            advice: None,
        };
    }
    if reply.code / 100 == 4 {
        return finding(
            format!("the primary defers mail relayed by mx2: {reply}"),
            "every message the backup holds would wait longer: exempt mx2's addresses from greylisting, rate limits and temporary policy checks on the primary",
        );
    }
    match class {
        Some((5, 7)) => finding(
            format!("the primary refuses mail relayed by mx2: {reply}"),
            "exempt mx2's addresses from SPF, DMARC and sender checks on the primary (Postfix: add them to mynetworks or permit them before the policy checks; rspamd/SpamAssassin: list them as trusted relays), then drill again",
        ),
        Some((5, 1)) => finding(
            format!("the primary does not know the canary {rcpt}: {reply}"),
            "create the canary on the primary (an alias that discards is enough), or set drill_rcpt to an address the primary knows",
        ),
        _ => finding(
            format!("the primary refuses mail relayed by mx2: {reply}"),
            "find the reply in the primary's log: it must take mail from mx2's addresses as from any MX of the domain",
        ),
    }
}

/// mx2 could not hand the drill message over at all.
pub fn primary_unreachable(error: &str) -> Finding {
    finding(
        format!("mx2 cannot reach the primary: {error}"),
        "check that the primary's firewall lets mx2's addresses in on the SMTP port, and that the domain's `primary` (or its MX records) names the right host",
    )
}

/// mx2 itself refused the canary at RCPT.
pub fn canary_refused(reply: &RemoteReply, rcpt: &str) -> Finding {
    finding(
        format!("mx2 refuses the canary {rcpt}: {reply}"),
        "make the recipient check know the canary (add it to the domain's recipient list, or to the primary when mx2 asks it), or set drill_rcpt to an address it knows",
    )
}

/// mx2 refused the drill message after the canary was accepted.
pub fn message_refused(reply: &RemoteReply) -> Finding {
    finding(
        format!("mx2 did not accept the drill message: {reply}"),
        "the reply says why (queue full, disk reserve, rate limit from this address); mail from the world gets the same answer now",
    )
}

/// The outside sender's session with this server failed.
pub fn inbound_unreachable(host: &str, port: u16, error: &str) -> Finding {
    finding(
        format!("cannot reach this server as an outside sender at {host} port {port}: {error}"),
        "check that the firewall in front of mx2 lets SMTP in, and that the MX host name resolves to mx2's public address",
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::smtp::Reply;

    fn reply(code: u16, status: &str, text: &str) -> RemoteReply {
        RemoteReply::of(&Reply::new(code, status, text))
    }

    #[test]
    fn the_primary_refusing_relayed_mail_names_the_exemption() {
        let f = handoff(&reply(550, "5.7.23", "SPF fail"), "c@a.test");
        assert_eq!(
            f.detail,
            "the primary refuses mail relayed by mx2: 550 5.7.23 SPF fail"
        );
        assert!(f.advice.unwrap().starts_with("exempt mx2's addresses"));
    }

    #[test]
    fn each_reply_class_has_its_finding() {
        let ok = handoff(&reply(250, "2.0.0", "queued"), "c@a.test");
        assert!(
            ok.advice.is_none() && ok.detail.contains("took it"),
            "{ok:?}"
        );
        let later = handoff(&reply(451, "4.7.1", "greylisted"), "c@a.test");
        assert!(later.detail.contains("defers") && later.advice.unwrap().contains("greylisting"));
        let unknown = handoff(&reply(550, "5.1.1", "no such user"), "c@a.test");
        assert!(
            unknown.detail.contains("does not know the canary c@a.test"),
            "{unknown:?}"
        );
        let other = handoff(&reply(554, "5.3.0", "no"), "c@a.test");
        assert!(other.advice.unwrap().contains("primary's log"));
        let refused = canary_refused(&reply(550, "5.1.1", "unknown user"), "c@a.test");
        assert!(
            refused
                .detail
                .starts_with("mx2 refuses the canary c@a.test: 550 5.1.1")
        );
        assert!(
            primary_unreachable("refused")
                .advice
                .unwrap()
                .contains("firewall")
        );
        assert!(
            inbound_unreachable("mx2.test", 25, "timed out")
                .detail
                .contains("mx2.test port 25")
        );
    }
}
