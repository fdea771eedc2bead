//! Result recording, decided: what each recipient's row becomes after a delivery attempt or a
//! scheduler decision. Delivered and failed recipients are final; deferred ones are pending
//! again with the next attempt's time; a broken connection defers every recipient; expired
//! messages, refusing destinations and operator bounces end every recipient at once; a job
//! put back is pending again without counting an attempt. Whether a failure or an expiry
//! also calls for a bounce is `bounce`'s question, asked when the updates are written.
//!
//! Pure: takes the time and the retry schedule as arguments. Must never touch the queue,
//! the network, the clock or the logs (see `commit` for the writing).

use crate::delivery::reply::RemoteReply;
use crate::delivery::{Outcome, RecipientResult};
use crate::queue::{Job, Recipient, Status, Update};

/// What one recipient's delivery result becomes.
#[derive(Debug, Clone)]
pub(super) struct Recorded {
    pub update: Update,
    pub outcome: Outcome,
    /// What the attempt taught about the address: it exists (delivered) or it does not
    /// (refused as an unknown user, `5.1.1`).
    pub learned: Option<bool>,
}

/// The rows for a finished transaction's results, in the job's order. `next_attempt` gives
/// the time of the next attempt after the given number of failed attempts.
pub(super) fn results(
    job: &Job,
    results: &[RecipientResult],
    now_ms: i64,
    mut next_attempt: impl FnMut(u32) -> i64,
) -> Vec<Recorded> {
    results
        .iter()
        .zip(&job.recipients)
        .map(|(r, rcpt)| {
            let (status, next, learned) = match r.outcome {
                Outcome::Delivered => (Status::Delivered, now_ms, Some(true)),
                Outcome::Failed => (
                    Status::Failed,
                    now_ms,
                    r.reply.is_unknown_user().then_some(false),
                ),
                Outcome::Deferred => (Status::Pending, next_attempt(rcpt.attempts + 1), None),
            };
            Recorded {
                update: Update::new(r.row, status, true, next, Some(r.reply.to_string())),
                outcome: r.outcome,
                learned,
            }
        })
        .collect()
}

/// The connection broke during the transaction (`error` says how): every recipient is
/// deferred, the attempt counted.
pub(super) fn broken(
    job: &Job,
    error: &str,
    mut next_attempt: impl FnMut(u32) -> i64,
) -> Vec<Update> {
    every(job, Status::Pending, true, Some(error), |r| {
        next_attempt(r.attempts + 1)
    })
}

/// The message has been queued for its whole lifetime.
pub(super) fn is_expired(received_at_ms: i64, lifetime_ms: i64, now_ms: i64) -> bool {
    received_at_ms.saturating_add(lifetime_ms) <= now_ms
}

/// Every recipient of an expired message.
pub(super) fn expired(job: &Job, now_ms: i64) -> Vec<Update> {
    let why = "expired: queue lifetime exceeded";
    every(job, Status::Expired, false, Some(why), |_| now_ms)
}

/// Every recipient fails with `reply`: the destination refuses all mail (an attempt), or
/// the operator returns the message (not one).
pub(super) fn failed(job: &Job, reply: &RemoteReply, attempted: bool, now_ms: i64) -> Vec<Update> {
    let reply = reply.to_string();
    every(job, Status::Failed, attempted, Some(&reply), |_| now_ms)
}

/// The job's claim is released without counting an attempt, due at `at_ms`; `why` is shown
/// by `mx2 queue show`.
pub(super) fn put_back(job: &Job, at_ms: i64, why: Option<&str>) -> Vec<Update> {
    every(job, Status::Pending, false, why, |_| at_ms)
}

/// The same row for each of the job's recipients, due when `at` says.
fn every(
    job: &Job,
    status: Status,
    attempted: bool,
    reply: Option<&str>,
    mut at: impl FnMut(&Recipient) -> i64,
) -> Vec<Update> {
    job.recipients
        .iter()
        .map(|r| Update::new(r.row, status, attempted, at(r), reply.map(str::to_string)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_000_000;

    fn job(attempts: &[u32]) -> Job {
        Job {
            queue_id: "q".into(),
            domain: "example.test".into(),
            sender: "s@sender.test".into(),
            mail_params: String::new(),
            received_at_ms: 0,
            size: 10,
            authenticated: None,
            recipients: attempts
                .iter()
                .enumerate()
                .map(|(i, &attempts)| Recipient {
                    row: i as i64 + 1,
                    address: format!("u{i}@example.test"),
                    params: String::new(),
                    attempts,
                    warned: false,
                })
                .collect(),
        }
    }

    /// The next attempt after `n` failures, a recognisable number.
    fn next(n: u32) -> i64 {
        NOW + i64::from(n) * 1000
    }

    /// An update's status, whether it counts as an attempt, its next attempt and its reply.
    type Row<'a> = (Status, bool, i64, Option<&'a str>);

    fn row(u: &Update) -> Row<'_> {
        let reply = u.last_reply.as_deref();
        (u.status, u.attempted, u.next_attempt_ms, reply)
    }

    /// One recipient with `attempts` failed attempts gets `outcome` with `reply`: its row's
    /// status, next attempt and what was learned (the attempt is counted and the reply kept).
    fn one(outcome: Outcome, reply: &str, attempts: u32) -> (Status, i64, Option<bool>) {
        let j = job(&[attempts]);
        let r = RecipientResult {
            row: 1,
            address: j.recipients[0].address.clone(),
            outcome,
            reply: RemoteReply::parse(reply).unwrap(),
        };
        let got = results(&j, &[r], NOW, next);
        assert_eq!(got.len(), 1);
        let (u, o) = (&got[0].update, got[0].outcome);
        assert_eq!((u.row, u.attempted, o), (1, true, outcome), "{reply}");
        assert_eq!(u.last_reply.as_deref(), Some(reply));
        (u.status, u.next_attempt_ms, got[0].learned)
    }

    #[test]
    fn each_result_becomes_its_row() {
        use Outcome::*;
        use Status::{Delivered as Done, Failed as Fail, Pending};
        let cases = [
            (one(Delivered, "250 2.0.0 ok", 0), (Done, NOW, Some(true))),
            (one(Delivered, "250 ok", 3), (Done, NOW, Some(true))),
            (
                one(Failed, "550 5.1.1 no such user", 0),
                (Fail, NOW, Some(false)),
            ),
            (
                one(Failed, "550 5.7.1 relaying denied", 0),
                (Fail, NOW, None),
            ),
            (one(Failed, "550 no 5.1.1 here", 0), (Fail, NOW, None)),
            (one(Failed, "552 5.3.4 too big", 1), (Fail, NOW, None)),
            (
                one(Deferred, "451 4.3.0 try later", 0),
                (Pending, next(1), None),
            ),
            (
                one(Deferred, "421 4.4.2 closing", 4),
                (Pending, next(5), None),
            ),
            (
                one(Deferred, "552 5.5.3 too many", 2),
                (Pending, next(3), None),
            ),
        ];
        for (i, (got, expected)) in cases.into_iter().enumerate() {
            assert_eq!(got, expected, "case {i}");
        }
    }

    #[test]
    fn results_follow_the_jobs_recipients() {
        let j = job(&[0, 2]);
        let r = |row, outcome, reply| RecipientResult {
            row,
            address: String::new(),
            outcome,
            reply: RemoteReply::parse(reply).unwrap(),
        };
        let got = results(
            &j,
            &[
                r(1, Outcome::Delivered, "250 ok"),
                r(2, Outcome::Deferred, "451 later"),
            ],
            NOW,
            next,
        );
        let rows: Vec<_> = got
            .iter()
            .map(|g| (g.update.row, g.update.status, g.update.next_attempt_ms))
            .collect();
        assert_eq!(
            rows,
            [(1, Status::Delivered, NOW), (2, Status::Pending, next(3))]
        );
    }

    #[test]
    fn decisions_for_every_recipient() {
        use Status::*;
        let j = job(&[0, 6]);
        let no = "554 5.0.0 delivery cancelled";
        let cancelled = RemoteReply::parse(no).unwrap();
        let (lost, held) = ("h: connection lost", "held: the primary is down");
        let gone = Some("expired: queue lifetime exceeded");
        let cases: [(&str, Vec<Update>, [Row<'_>; 2]); 6] = [
            (
                "broken",
                broken(&j, lost, next),
                [
                    (Pending, true, next(1), Some(lost)),
                    (Pending, true, next(7), Some(lost)),
                ],
            ),
            (
                "expired",
                expired(&j, NOW),
                [(Expired, false, NOW, gone); 2],
            ),
            (
                "refused",
                failed(&j, &cancelled, true, NOW),
                [(Failed, true, NOW, Some(no)); 2],
            ),
            (
                "bounced",
                failed(&j, &cancelled, false, NOW),
                [(Failed, false, NOW, Some(no)); 2],
            ),
            (
                "put back",
                put_back(&j, 42, None),
                [(Pending, false, 42, None); 2],
            ),
            (
                "held",
                put_back(&j, 42, Some(held)),
                [(Pending, false, 42, Some(held)); 2],
            ),
        ];
        for (what, updates, expected) in cases {
            let got: Vec<Row<'_>> = updates.iter().map(row).collect();
            assert_eq!(got, expected, "{what}");
        }
    }

    #[test]
    fn expiry_at_the_lifetime() {
        assert!(!is_expired(0, 1000, 999));
        assert!(is_expired(0, 1000, 1000));
        assert!(!is_expired(i64::MAX - 1, i64::MAX, NOW), "no overflow");
    }
}
