//! Delivery: one mail transaction to a primary for one job (a message's recipients in one
//! domain), turning the primary's replies into per-recipient outcomes (a typed [`reply`]).
//! Which hosts to try is the route's business: the domain's static `primary` hosts in order,
//! or its MX records more preferred than this server ([`mx`]), each host with its TLS
//! [`policy`] (DANE from its TLSA records, [`dane`]; what an MX domain's MTA-STS policy
//! allows, [`mta_sts`]); the connection, TLS and AUTH come from [`client::Client`] and
//! [`auth`].

pub mod auth;
pub mod client;
pub mod dane;
pub mod mta_sts;
pub mod mx;
pub mod policy;
pub mod reply;
pub mod sendfile;

use crate::queue::Job;
use crate::queue::body::BodyReader;
use crate::smtp::Reply;
use client::{Client, ClientError};
use reply::RemoteReply;
use std::time::Duration;

/// What happened to one recipient.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Delivered,
    /// Try again later.
    Deferred,
    /// Permanent failure.
    Failed,
}

impl Outcome {
    fn of(reply: &Reply) -> Self {
        if reply.is_positive() {
            Outcome::Delivered
        } else if reply.is_permanent() {
            Outcome::Failed
        } else {
            Outcome::Deferred
        }
    }
}

#[derive(Debug, Clone)]
pub struct RecipientResult {
    pub row: i64,
    pub address: String,
    pub outcome: Outcome,
    pub reply: RemoteReply,
}

/// The transaction broke off: the connection is unusable. `after_dot` means the content was
/// sent in full and no reply came: the primary may have the message (RFC 1047).
#[derive(Debug)]
pub struct Broken {
    pub error: ClientError,
    pub after_dot: bool,
}

/// The MAIL FROM parameters to send: SIZE is recomputed; others pass when the primary
/// supports their extension. Err: the message needs an extension the primary lacks.
fn mail_params(job: &Job, client: &Client, size: u64) -> Result<String, Reply> {
    let caps = &client.caps;
    let mut out = Vec::new();
    if caps.size.is_some() {
        out.push(format!("SIZE={size}"));
    }
    for p in job.mail_params.split(' ').filter(|p| !p.is_empty()) {
        let kw = p.split('=').next().unwrap_or(p).to_ascii_uppercase();
        match kw.as_str() {
            "BODY" if caps.eightbit => out.push(p.to_string()),
            "SMTPUTF8" if caps.smtputf8 => out.push(p.to_string()),
            "SMTPUTF8" => {
                return Err(Reply::new(
                    553,
                    "5.6.7",
                    "the primary does not support SMTPUTF8, which this message needs",
                ));
            }
            "RET" | "ENVID" if caps.dsn => out.push(p.to_string()),
            _ => {}
        }
    }
    Ok(if out.is_empty() {
        String::new()
    } else {
        format!(" {}", out.join(" "))
    })
}

fn rcpt_params(params: &str, client: &Client) -> String {
    let kept: Vec<&str> = params
        .split(' ')
        .filter(|p| !p.is_empty())
        .filter(|p| {
            let kw = p.split('=').next().unwrap_or(p).to_ascii_uppercase();
            client.caps.dsn && (kw == "NOTIFY" || kw == "ORCPT")
        })
        .collect();
    if kept.is_empty() {
        String::new()
    } else {
        format!(" {}", kept.join(" "))
    }
}

fn all(job: &Job, reply: &Reply) -> Vec<RecipientResult> {
    job.recipients
        .iter()
        .map(|r| RecipientResult {
            row: r.row,
            address: r.address.clone(),
            outcome: Outcome::of(reply),
            reply: RemoteReply::of(reply),
        })
        .collect()
}

/// Why a transaction stopped early: the connection broke, or the server said 421 (it is
/// closing the channel), whose reply then applies to every recipient.
enum Stop {
    Broken(Broken),
    Closing(Reply),
}

impl From<Broken> for Stop {
    fn from(b: Broken) -> Self {
        Stop::Broken(b)
    }
}

fn broken(error: ClientError) -> Broken {
    Broken {
        error,
        after_dot: false,
    }
}

/// Reads one reply before the content is sent.
async fn expect(client: &mut Client, limit: Duration, what: &'static str) -> Result<Reply, Stop> {
    let r = client.read_reply(limit, what).await.map_err(broken)?;
    if client.closing {
        return Err(Stop::Closing(r));
    }
    Ok(r)
}

/// Runs one mail transaction for `job` on an open connection.
pub async fn deliver(
    client: &mut Client,
    job: &Job,
    body: &mut BodyReader,
) -> Result<Vec<RecipientResult>, Broken> {
    match transaction(client, job, body).await {
        Ok(results) => Ok(results),
        Err(Stop::Closing(reply)) => Ok(all(job, &reply)),
        Err(Stop::Broken(b)) => Err(b),
    }
}

async fn transaction(
    client: &mut Client,
    job: &Job,
    body: &mut BodyReader,
) -> Result<Vec<RecipientResult>, Stop> {
    if let Some(max) = client.caps.size
        && body.size > max
    {
        let r = Reply::new(
            552,
            "5.3.4",
            format!(
                "message size {} exceeds the primary's limit of {max}",
                body.size
            ),
        );
        return Ok(all(job, &r));
    }
    let params = match mail_params(job, client, body.size) {
        Ok(p) => p,
        Err(r) => return Ok(all(job, &r)),
    };
    let t = client.timeouts().clone();
    let mail = format!("MAIL FROM:<{}>{params}\r\n", job.sender);
    let rcpts: Vec<String> = job
        .recipients
        .iter()
        .map(|r| {
            format!(
                "RCPT TO:<{}>{}\r\n",
                r.address,
                rcpt_params(&r.params, client)
            )
        })
        .collect();

    let (mail_reply, rcpt_replies, data_reply) = if client.caps.pipelining {
        let mut batch = mail.clone().into_bytes();
        for r in &rcpts {
            batch.extend_from_slice(r.as_bytes());
        }
        batch.extend_from_slice(b"DATA\r\n");
        client
            .send(&batch, "MAIL/RCPT/DATA")
            .await
            .map_err(broken)?;
        let m = expect(client, t.command, "the MAIL reply").await?;
        let mut rr = Vec::new();
        for _ in &rcpts {
            rr.push(expect(client, t.command, "a RCPT reply").await?);
        }
        let d = expect(client, t.command, "the DATA reply").await?;
        (m, rr, Some(d))
    } else {
        client.send(mail.as_bytes(), "MAIL").await.map_err(broken)?;
        let m = expect(client, t.command, "the MAIL reply").await?;
        let mut rr = Vec::new();
        if m.is_positive() {
            for r in &rcpts {
                client.send(r.as_bytes(), "RCPT").await.map_err(broken)?;
                rr.push(expect(client, t.command, "a RCPT reply").await?);
            }
        }
        let d = if rr.iter().any(Reply::is_positive) {
            client.send(b"DATA\r\n", "DATA").await.map_err(broken)?;
            Some(expect(client, t.command, "the DATA reply").await?)
        } else {
            None
        };
        (m, rr, d)
    };

    let accepted: Vec<usize> = (0..rcpt_replies.len())
        .filter(|&i| rcpt_replies[i].is_positive())
        .collect();
    let usable = mail_reply.is_positive() && !accepted.is_empty();
    if !usable {
        // Nothing to send. A server that still said 354 gets an empty message cut short.
        if data_reply.as_ref().is_some_and(|d| d.code == 354) {
            client
                .send(b".\r\n", "the end of data")
                .await
                .map_err(broken)?;
            client
                .read_reply(t.data, "the final reply")
                .await
                .map_err(broken)?;
        }
        if !client.closing {
            reset(client).await.map_err(broken)?;
        }
        if !mail_reply.is_positive() {
            return Ok(all(job, &mail_reply));
        }
        return Ok(per_recipient(job, &rcpt_replies, None));
    }
    let data_reply = data_reply.unwrap_or_else(|| Reply::new(451, "4.0.0", "no DATA reply"));
    if data_reply.code != 354 {
        reset(client).await.map_err(broken)?;
        return Ok(per_recipient(job, &rcpt_replies, Some(&data_reply)));
    }
    client.send_content(body).await.map_err(broken)?;
    // The final reply applies to the accepted recipients only, 421 included (the worker
    // sees `closing` and drops the connection).
    let final_reply = client
        .read_reply(t.data, "the reply to the end of data")
        .await
        .map_err(|error| Broken {
            error,
            after_dot: true,
        })?;
    Ok(per_recipient(job, &rcpt_replies, Some(&final_reply)))
}

/// Each recipient's outcome: its RCPT reply when that was negative, else `after` (the DATA or
/// final reply), which applies to every accepted recipient.
fn per_recipient(job: &Job, rcpt_replies: &[Reply], after: Option<&Reply>) -> Vec<RecipientResult> {
    job.recipients
        .iter()
        .zip(rcpt_replies)
        .map(|(r, rr)| {
            let reply = if rr.is_positive() {
                after.unwrap_or(rr)
            } else {
                rr
            };
            let reply = if rr.is_positive() && after.is_none() {
                // Accepted, but the transaction was abandoned: try again later.
                Reply::new(451, "4.0.0", "transaction abandoned")
            } else {
                reply.clone()
            };
            // RFC 5321 §4.5.3.1.10: 552 to RCPT is the old "too many recipients"; treat it as
            // temporary (the rest go in another transaction).
            let outcome = if !rr.is_positive() && rr.code == 552 {
                Outcome::Deferred
            } else {
                Outcome::of(&reply)
            };
            RecipientResult {
                row: r.row,
                address: r.address.clone(),
                outcome,
                reply: RemoteReply::of(&reply),
            }
        })
        .collect()
}

async fn reset(client: &mut Client) -> Result<(), ClientError> {
    client.send(b"RSET\r\n", "RSET").await?;
    let t = client.timeouts().command;
    client.read_reply(t, "the RSET reply").await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::Recipient;

    fn job(addresses: &[&str]) -> Job {
        Job {
            queue_id: "q1".into(),
            domain: "example.test".into(),
            sender: "s@sender.test".into(),
            mail_params: String::new(),
            received_at_ms: 0,
            size: 10,
            recipients: addresses
                .iter()
                .enumerate()
                .map(|(i, a)| Recipient {
                    row: i as i64,
                    address: a.to_string(),
                    params: String::new(),
                    attempts: 0,
                    warned: false,
                })
                .collect(),
            authenticated: None,
        }
    }

    #[test]
    fn each_recipient_gets_its_own_rcpt_reply_or_the_final_one() {
        let j = job(&["a@x", "b@x", "c@x", "d@x"]);
        let rcpt = [
            Reply::new(250, "2.1.5", "ok"),
            Reply::new(550, "5.1.1", "no such user"),
            Reply::new(450, "4.2.0", "greylisted"),
            Reply::new(552, "5.5.3", "too many recipients"),
        ];
        let done = per_recipient(&j, &rcpt, Some(&Reply::new(250, "2.0.0", "queued")));
        let outcomes: Vec<Outcome> = done.iter().map(|r| r.outcome).collect();
        assert_eq!(
            outcomes,
            [
                Outcome::Delivered,
                Outcome::Failed,
                Outcome::Deferred,
                // RFC 5321 §4.5.3.1.10: 552 to RCPT is temporary.
                Outcome::Deferred
            ]
        );
        assert!(
            done[3].reply.to_string().starts_with("552 5.5.3"),
            "{}",
            done[3].reply
        );
    }

    #[test]
    fn accepted_recipients_of_an_abandoned_transaction_are_deferred() {
        let j = job(&["a@x"]);
        let done = per_recipient(&j, &[Reply::new(250, "2.1.5", "ok")], None);
        assert_eq!(done[0].outcome, Outcome::Deferred);
        let failed = per_recipient(
            &j,
            &[Reply::new(250, "2.1.5", "ok")],
            Some(&Reply::new(554, "5.6.0", "content rejected")),
        );
        assert_eq!(failed[0].outcome, Outcome::Failed);
    }
}
