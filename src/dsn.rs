//! Delivery status notifications (RFC 3461/3464): what the sender asked for (NOTIFY, RET,
//! ENVID, ORCPT) and building the multipart/report message. Pure: no I/O, no clock.

use crate::date::rfc5322_date;
use std::time::SystemTime;

/// Decodes xtext (RFC 3461 §4): `+HH` is a byte in hex.
pub fn xtext_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'+' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// True for a well-formed xtext value.
pub fn is_xtext(s: &str) -> bool {
    !s.is_empty()
        && xtext_decode(s).is_some()
        && s.bytes().all(|c| (b'!'..=b'~').contains(&c) && c != b'=')
}

/// What a recipient's NOTIFY parameter asks for (RFC 3461 §4.1); absent means FAILURE and
/// DELAY at the MTA's discretion.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Notify {
    pub success: bool,
    pub failure: bool,
    pub delay: bool,
}

impl Notify {
    pub const DEFAULT: Notify = Notify {
        success: false,
        failure: true,
        delay: true,
    };

    /// Parses the value of NOTIFY=; None when malformed.
    pub fn parse(value: &str) -> Option<Notify> {
        if value.eq_ignore_ascii_case("NEVER") {
            return Some(Notify {
                success: false,
                failure: false,
                delay: false,
            });
        }
        let mut n = Notify {
            success: false,
            failure: false,
            delay: false,
        };
        for word in value.split(',') {
            match word.to_ascii_uppercase().as_str() {
                "SUCCESS" => n.success = true,
                "FAILURE" => n.failure = true,
                "DELAY" => n.delay = true,
                _ => return None,
            }
        }
        Some(n)
    }

    /// From a recipient's stored parameter text.
    pub fn of_params(params: &str) -> Notify {
        param(params, "NOTIFY")
            .and_then(Notify::parse)
            .unwrap_or(Notify::DEFAULT)
    }
}

/// The value of `KEY=value` in a space-separated parameter text.
pub fn param<'a>(params: &'a str, key: &str) -> Option<&'a str> {
    params.split(' ').find_map(|p| {
        let (k, v) = p.split_once('=')?;
        k.eq_ignore_ascii_case(key).then_some(v)
    })
}

/// What happened, per RFC 3464 (its Action field).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DsnAction {
    Failed,
    Delayed,
    Relayed,
}

impl DsnAction {
    /// `failed`, `delayed` or `relayed`, as in the report.
    pub fn name(self) -> &'static str {
        self.word()
    }

    fn word(self) -> &'static str {
        match self {
            DsnAction::Failed => "failed",
            DsnAction::Delayed => "delayed",
            DsnAction::Relayed => "relayed",
        }
    }
}

/// One recipient's line in the report.
#[derive(Debug, Clone)]
pub struct RecipientReport {
    pub address: String,
    /// The recipient's RCPT parameters (ORCPT is taken from them).
    pub params: String,
    pub action: DsnAction,
    /// `5.1.1` and the like.
    pub status: String,
    /// The remote server's reply, if any.
    pub diagnostic: Option<String>,
    pub remote_mta: Option<String>,
}

/// Everything a report needs about the original message.
pub struct Report<'a> {
    pub reporting_mta: &'a str,
    pub queue_id: &'a str,
    /// The original sender (the report's recipient unless the policy says otherwise).
    pub original_sender: &'a str,
    /// The original MAIL FROM parameters (RET, ENVID).
    pub mail_params: &'a str,
    pub arrival: SystemTime,
    pub now: SystemTime,
    pub recipients: &'a [RecipientReport],
    /// The original content (trace headers included).
    pub original: &'a [u8],
    /// Originals larger than this are returned as headers only.
    pub max_original: usize,
    /// A unique token for the MIME boundary and Message-ID.
    pub unique: &'a str,
}

fn header_section(content: &[u8]) -> &[u8] {
    match content.windows(4).position(|w| w == b"\r\n\r\n") {
        Some(i) => &content[..i + 2],
        None => content,
    }
}

/// Keeps report text on one 7-bit line.
fn clean(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii() && !c.is_ascii_control() {
                c
            } else {
                '?'
            }
        })
        .collect()
}

impl Report<'_> {
    fn subject(&self) -> &'static str {
        let actions: Vec<DsnAction> = self.recipients.iter().map(|r| r.action).collect();
        if actions.contains(&DsnAction::Failed) {
            "Undelivered Mail Returned to Sender"
        } else if actions.contains(&DsnAction::Delayed) {
            "Delayed Mail (still being retried)"
        } else {
            "Successful Mail Delivery Report (relayed)"
        }
    }

    /// The whole report message: headers and multipart/report body, CRLF line endings.
    pub fn build(&self) -> Vec<u8> {
        let boundary = format!("mx2-report-{}", self.unique);
        let mut out = String::new();
        let push = |out: &mut String, line: &str| {
            out.push_str(line);
            out.push_str("\r\n");
        };
        push(
            &mut out,
            &format!(
                "From: Mail Delivery System <MAILER-DAEMON@{}>",
                self.reporting_mta
            ),
        );
        push(&mut out, &format!("To: <{}>", clean(self.original_sender)));
        push(&mut out, &format!("Subject: {}", self.subject()));
        push(&mut out, &format!("Date: {}", rfc5322_date(self.now)));
        push(
            &mut out,
            &format!("Message-ID: <{}.dsn@{}>", self.unique, self.reporting_mta),
        );
        push(&mut out, "Auto-Submitted: auto-replied");
        push(&mut out, "MIME-Version: 1.0");
        push(
            &mut out,
            &format!(
                "Content-Type: multipart/report; report-type=delivery-status;\r\n\tboundary=\"{boundary}\""
            ),
        );
        push(&mut out, "");
        push(
            &mut out,
            "This is a MIME-encapsulated delivery status notification.",
        );
        push(&mut out, "");

        // Part 1: for people.
        push(&mut out, &format!("--{boundary}"));
        push(&mut out, "Content-Type: text/plain; charset=us-ascii");
        push(&mut out, "Content-Transfer-Encoding: 7bit");
        push(&mut out, "");
        push(
            &mut out,
            &format!("This is the mail system at {}.", self.reporting_mta),
        );
        push(&mut out, "");
        for r in self.recipients {
            let what = match r.action {
                DsnAction::Failed => "could not be delivered and will not be retried",
                DsnAction::Delayed => "has not been delivered yet; delivery will be retried",
                DsnAction::Relayed => {
                    "was relayed to a server that sends no delivery notifications"
                }
            };
            push(
                &mut out,
                &format!("Your message to <{}> {what}.", clean(&r.address)),
            );
            if let Some(d) = &r.diagnostic {
                push(&mut out, &format!("    {}", clean(d)));
            }
        }
        push(&mut out, "");

        // Part 2: for machines (RFC 3464).
        push(&mut out, &format!("--{boundary}"));
        push(&mut out, "Content-Type: message/delivery-status");
        push(&mut out, "Content-Transfer-Encoding: 7bit");
        push(&mut out, "");
        // RFC 3464 §2.2's order: Original-Envelope-Id, Reporting-MTA, Arrival-Date, then
        // extension fields.
        if let Some(envid) = param(self.mail_params, "ENVID").and_then(xtext_decode) {
            push(
                &mut out,
                &format!("Original-Envelope-Id: {}", clean(&envid)),
            );
        }
        push(
            &mut out,
            &format!("Reporting-MTA: dns; {}", self.reporting_mta),
        );
        push(
            &mut out,
            &format!("Arrival-Date: {}", rfc5322_date(self.arrival)),
        );
        push(&mut out, &format!("X-Mx2-Queue-ID: {}", self.queue_id));
        for r in self.recipients {
            push(&mut out, "");
            if let Some(orcpt) = param(&r.params, "ORCPT")
                && let Some((kind, addr)) = orcpt.split_once(';')
                && let Some(addr) = xtext_decode(addr)
            {
                push(
                    &mut out,
                    &format!("Original-Recipient: {}; {}", clean(kind), clean(&addr)),
                );
            }
            push(
                &mut out,
                &format!("Final-Recipient: rfc822; {}", clean(&r.address)),
            );
            push(&mut out, &format!("Action: {}", r.action.word()));
            push(&mut out, &format!("Status: {}", r.status));
            if let Some(m) = &r.remote_mta {
                // An mta-name is a host name: "primary.example (192.0.2.1:25)" gives its name.
                let name = m.split(" (").next().unwrap_or(m);
                push(&mut out, &format!("Remote-MTA: dns; {}", clean(name)));
            }
            if let Some(d) = &r.diagnostic {
                push(&mut out, &format!("Diagnostic-Code: smtp; {}", clean(d)));
            }
            push(
                &mut out,
                &format!("Last-Attempt-Date: {}", rfc5322_date(self.now)),
            );
        }
        push(&mut out, "");

        // Part 3: the original, or its headers: RET=HDRS, too large, or a notice that is not
        // a failure (RFC 3461 §4.3: RET is about failed DSNs; delay and relay notices carry
        // headers, as Postfix's do).
        let mut bytes = out.into_bytes();
        let hdrs_only = param(self.mail_params, "RET")
            .is_some_and(|v| v.eq_ignore_ascii_case("HDRS"))
            || self.original.len() > self.max_original
            || self
                .recipients
                .iter()
                .any(|r| r.action != DsnAction::Failed);
        let eight_bit = self.original.iter().any(|&b| b >= 0x80);
        let cte = if eight_bit { "8bit" } else { "7bit" };
        bytes.extend_from_slice(format!("--{boundary}\r\n").as_bytes());
        if hdrs_only {
            bytes.extend_from_slice(
                format!(
                    "Content-Type: text/rfc822-headers\r\nContent-Transfer-Encoding: {cte}\r\n\r\n"
                )
                .as_bytes(),
            );
            bytes.extend_from_slice(header_section(self.original));
        } else {
            bytes.extend_from_slice(
                format!("Content-Type: message/rfc822\r\nContent-Transfer-Encoding: {cte}\r\n\r\n")
                    .as_bytes(),
            );
            bytes.extend_from_slice(self.original);
        }
        if !bytes.ends_with(b"\r\n") {
            bytes.extend_from_slice(b"\r\n");
        }
        bytes.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
        bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xtext() {
        assert_eq!(xtext_decode("a+2Bb+3Dc").as_deref(), Some("a+b=c"));
        assert_eq!(xtext_decode("bad+zz"), None);
        assert!(is_xtext("QQ314159"));
        assert!(!is_xtext("a=b"));
        assert!(!is_xtext(""));
    }

    #[test]
    fn notify() {
        assert_eq!(
            Notify::parse("never").unwrap(),
            Notify {
                success: false,
                failure: false,
                delay: false
            }
        );
        assert_eq!(
            Notify::parse("SUCCESS,DELAY").unwrap(),
            Notify {
                success: true,
                failure: false,
                delay: true
            }
        );
        assert!(Notify::parse("NEVER,SUCCESS").is_none());
        assert!(Notify::parse("SOMETIMES").is_none());
        assert_eq!(Notify::of_params("ORCPT=rfc822;a@b"), Notify::DEFAULT);
        assert!(!Notify::of_params("NOTIFY=NEVER").failure);
    }

    fn build(rcpts: &[RecipientReport], mail_params: &str, original: &[u8]) -> String {
        let r = Report {
            reporting_mta: "mx2.test",
            queue_id: "q1",
            original_sender: "a@b.test",
            mail_params,
            arrival: SystemTime::UNIX_EPOCH,
            now: SystemTime::UNIX_EPOCH,
            recipients: rcpts,
            original,
            max_original: 1000,
            unique: "u1",
        };
        String::from_utf8(r.build()).unwrap()
    }

    #[test]
    fn per_message_fields_in_rfc_order_and_delay_notices_carry_headers_only() {
        let rcpts = [RecipientReport {
            address: "u@example.test".into(),
            params: String::new(),
            action: DsnAction::Delayed,
            status: "4.4.1".into(),
            diagnostic: None,
            remote_mta: Some("primary.example.test (192.0.2.1:25)".into()),
        }];
        let text = build(&rcpts, "RET=FULL ENVID=e1", b"Subject: hi\r\n\r\nbody\r\n");
        let at = |f: &str| text.find(f).unwrap_or_else(|| panic!("no {f}:\n{text}"));
        assert!(at("Original-Envelope-Id: e1") < at("Reporting-MTA: dns; mx2.test"));
        assert!(at("Reporting-MTA:") < at("Arrival-Date:"));
        assert!(at("Arrival-Date:") < at("X-Mx2-Queue-ID: q1"));
        assert!(
            text.contains("Remote-MTA: dns; primary.example.test\r\n"),
            "{text}"
        );
        assert!(text.contains("Content-Type: text/rfc822-headers"), "{text}");
        assert!(
            !text.contains("\r\nbody\r\n"),
            "a delay notice returns headers only"
        );
    }

    #[test]
    fn report_shape() {
        let original = b"Subject: hi\r\nFrom: a@b.test\r\n\r\nbody\r\n";
        let rcpts = [RecipientReport {
            address: "u@example.test".into(),
            params: "NOTIFY=FAILURE ORCPT=rfc822;U+2Bx@example.test".into(),
            action: DsnAction::Failed,
            status: "5.1.1".into(),
            diagnostic: Some("550 5.1.1 no such user".into()),
            remote_mta: Some("primary.example.test".into()),
        }];
        let text = build(&rcpts, "RET=HDRS ENVID=abc+2B1", original);
        assert!(text.contains("report-type=delivery-status"));
        assert!(text.contains("Original-Envelope-Id: abc+1\r\n"));
        assert!(text.contains("Original-Recipient: rfc822; U+x@example.test\r\n"));
        assert!(text.contains("Action: failed\r\nStatus: 5.1.1\r\n"));
        assert!(text.contains("Content-Type: text/rfc822-headers"));
        assert!(
            !text.contains("\r\nbody\r\n"),
            "RET=HDRS must not return the body"
        );
        assert!(!text.contains("base64"));
        assert!(text.ends_with("--mx2-report-u1--\r\n"));
    }
}
