//! Step (b) of a drill: an SMTP session with this server's public name as an outside sender
//! has it (the project's outbound client, opportunistic STARTTLS), sending the drill message
//! to the canary: connect, TLS, the recipient check, acceptance. Each becomes a step.

use super::advice;
use super::report::{Status, Step};
use crate::delivery::client::{Client, Timeouts};
use crate::delivery::mx::Target;
use crate::delivery::reply::RemoteReply;
use crate::queue::body::BodyReader;
use crate::tls::ClientTls;
use std::path::Path;
use std::time::Instant;

/// Times steps: each one's milliseconds since the last.
pub struct Clock(Instant);

impl Clock {
    pub fn start() -> Self {
        Self(Instant::now())
    }

    /// A step that ends now.
    pub fn step(&mut self, name: &str, status: Status, finding: advice::Finding) -> Step {
        let ms = u64::try_from(self.0.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.0 = Instant::now();
        Step {
            name: name.into(),
            status,
            detail: finding.detail,
            advice: finding.advice,
            ms,
        }
    }
}

/// A finding without advice.
pub fn fact(detail: impl Into<String>) -> advice::Finding {
    advice::Finding {
        detail: detail.into(),
        advice: None,
    }
}

/// What the session came to.
pub struct Sent {
    pub steps: Vec<Step>,
    /// mx2 said 250 to the end of data.
    pub accepted: bool,
}

/// The message: a unique Message-ID, the drill header with its token, and words for
/// whoever sees it anyway.
pub fn message(hostname: &str, rcpt: &str, message_id: &str, token: &str) -> Vec<u8> {
    let date = crate::date::rfc5322_date(std::time::SystemTime::now());
    format!(
        "From: mx2 fire drill <postmaster@{hostname}>\r\nTo: <{rcpt}>\r\nSubject: mx2 fire drill: backup MX path test\r\nDate: {date}\r\nMessage-ID: {message_id}\r\n{header}: {token}\r\nAuto-Submitted: auto-generated\r\nPrecedence: bulk\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\nThis message was sent by the backup MX {hostname} to itself and relayed to the\r\nprimary, to prove that mail arriving at the backup reaches the primary.\r\nIt can be discarded (the {header} header marks it).\r\n",
        header = super::watch::HEADER,
    )
    .into_bytes()
}

/// Connects to `targets` (this server as the world reaches it) and sends `body` from the
/// null sender to `rcpt`. `ca_file`: roots besides the Mozilla ones the certificate may
/// chain to.
pub async fn send(
    clock: &mut Clock,
    targets: &[Target],
    hostname: &str,
    t: &Timeouts,
    ca_file: Option<&Path>,
    rcpt: &str,
    body: Vec<u8>,
) -> Sent {
    let mut steps = Vec::new();
    let tls = match ClientTls::new(&crate::config::TlsPolicy::default()) {
        Ok(t) => t,
        Err(e) => {
            steps.push(clock.step("connect", Status::Fail, fact(format!("TLS set-up: {e}"))));
            return Sent {
                steps,
                accepted: false,
            };
        }
    };
    let (name, port) = targets
        .first()
        .map(|t| (t.name.as_str(), t.addr.port()))
        .unwrap_or(("(none)", 0));
    let mut client = match Client::connect(targets, hostname, t, &tls, None).await {
        Ok(c) => c,
        Err(e) => {
            let f = advice::inbound_unreachable(name, port, &e.to_string());
            steps.push(clock.step("connect", Status::Fail, f));
            return Sent {
                steps,
                accepted: false,
            };
        }
    };
    steps.push(clock.step(
        "connect",
        Status::Ok,
        fact(format!(
            "connected to {} as an outside sender would",
            client.host
        )),
    ));
    steps.push(tls_step(
        clock,
        "tls_in",
        client.tls.as_deref(),
        &client.server_name,
        &client.peer_certificates(),
        ca_file,
        "set [tls] cert and key so that senders can encrypt",
    ));
    let accepted = transaction(clock, &mut client, rcpt, body, &mut steps).await;
    client.quit().await;
    Sent { steps, accepted }
}

/// MAIL, RCPT (the recipient check), DATA and the content; true when mx2 said 250.
async fn transaction(
    clock: &mut Clock,
    client: &mut Client,
    rcpt: &str,
    body: Vec<u8>,
    steps: &mut Vec<Step>,
) -> bool {
    let t = client.timeouts().clone();
    let say = async |client: &mut Client, line: String, what: &'static str| {
        client.send(line.as_bytes(), what).await?;
        client.read_reply(t.command, what).await
    };
    let broke = |clock: &mut Clock, e: &dyn std::fmt::Display| {
        clock.step(
            "accepted",
            Status::Fail,
            fact(format!("the session with mx2 broke off: {e}")),
        )
    };
    let mail = match say(client, "MAIL FROM:<>\r\n".into(), "the MAIL reply").await {
        Ok(r) => r,
        Err(e) => {
            steps.push(broke(clock, &e));
            return false;
        }
    };
    if !mail.is_positive() {
        steps.push(clock.step(
            "accepted",
            Status::Fail,
            advice::message_refused(&RemoteReply::of(&mail)),
        ));
        return false;
    }
    let rcpt_reply = match say(client, format!("RCPT TO:<{rcpt}>\r\n"), "the RCPT reply").await {
        Ok(r) => r,
        Err(e) => {
            steps.push(broke(clock, &e));
            return false;
        }
    };
    let typed = RemoteReply::of(&rcpt_reply);
    if !rcpt_reply.is_positive() {
        steps.push(clock.step(
            "recipient",
            Status::Fail,
            advice::canary_refused(&typed, rcpt),
        ));
        return false;
    }
    steps.push(clock.step(
        "recipient",
        Status::Ok,
        fact(format!("mx2 accepts the canary {rcpt}: {typed}")),
    ));
    let data = match say(client, "DATA\r\n".into(), "the DATA reply").await {
        Ok(r) => r,
        Err(e) => {
            steps.push(broke(clock, &e));
            return false;
        }
    };
    if data.code != 354 {
        steps.push(clock.step(
            "accepted",
            Status::Fail,
            advice::message_refused(&RemoteReply::of(&data)),
        ));
        return false;
    }
    let sent = client.send_content(&mut BodyReader::from_vec(body)).await;
    let last = match sent {
        Ok(()) => {
            client
                .read_reply(t.data, "the reply to the end of data")
                .await
        }
        Err(e) => Err(e),
    };
    match last {
        Err(e) => {
            steps.push(broke(clock, &e));
            false
        }
        Ok(r) if r.is_positive() => {
            let typed = RemoteReply::of(&r);
            steps.push(clock.step("accepted", Status::Ok, fact(format!("mx2 said {typed}"))));
            true
        }
        Ok(r) => {
            steps.push(clock.step(
                "accepted",
                Status::Fail,
                advice::message_refused(&RemoteReply::of(&r)),
            ));
            false
        }
    }
}

/// A hop's TLS: version and cipher, and whether the certificate is valid for the name the
/// hop used (against the Mozilla roots and `ca_file`). Plaintext or an invalid certificate
/// is a warning: mail still flows, but not as safely as it could.
pub fn tls_step(
    clock: &mut Clock,
    name: &str,
    tls: Option<&str>,
    server_name: &str,
    chain: &[Vec<u8>],
    ca_file: Option<&Path>,
    plaintext_advice: &str,
) -> Step {
    let Some(tls) = tls else {
        return clock.step(
            name,
            Status::Warn,
            advice::Finding {
                detail: "no TLS: the session was in plaintext".into(),
                advice: Some(plaintext_advice.into()),
            },
        );
    };
    match crate::tls::verify_chain(chain, server_name, ca_file) {
        Ok(()) => clock.step(
            name,
            Status::Ok,
            fact(format!("{tls}; certificate valid for {server_name}")),
        ),
        Err(e) => clock.step(
            name,
            Status::Warn,
            advice::Finding {
                detail: format!("{tls}; certificate not valid for {server_name}: {e}"),
                advice: Some(format!(
                    "install a certificate for {server_name} from a public CA (or the one in the domain's tls_ca_file) and renew it before it expires"
                )),
            },
        ),
    }
}
