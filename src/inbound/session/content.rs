//! Message content: DATA and BDAT, the checks on what arrived (size, mail loops), the
//! Received header, sender authentication's verdict (DMARC), and the reply to the commit.
//! The listener reads the bytes and commits; this decides what is committed and what the
//! client is told. Never reads the clock: the time of reception is passed in.

use super::{Content, Hello, Next, Session, Transaction};
use crate::inbound::data::{Decoder, Mode};
use crate::inbound::received::{Trace, count_received};
use crate::policy::authres::Evaluation;
use crate::queue::{NewMessage, QueueId, StoreError, to_ms};
use crate::smtp::command::Param;
use crate::smtp::{Reply, ReversePath};
use std::time::SystemTime;

impl Session {
    pub(super) fn data(&mut self) -> Next {
        match &self.tx {
            None => self.error(Reply::new(503, "5.5.1", "need MAIL and RCPT before DATA")),
            Some(tx) if tx.recipients.is_empty() => {
                self.error(Reply::new(554, "5.5.1", "no valid recipients"))
            }
            Some(_) => Next::StartData(Reply::new(354, "", "end data with <CR><LF>.<CR><LF>")),
        }
    }

    /// A decoder for the DATA phase that [`Next::StartData`] asked for.
    pub fn data_decoder(&self) -> Decoder {
        Decoder::new(Mode::Dot, self.max_size())
    }

    /// The largest content the transaction takes (a recipient's domain may allow less than
    /// the server does).
    fn max_size(&self) -> u64 {
        self.tx
            .as_ref()
            .map_or(self.cfg.max_message_size, |t| t.max_size)
    }

    /// The most content read past the size limit before the connection is dropped.
    fn hard_cap(&self) -> u64 {
        self.cfg
            .max_message_size
            .saturating_mul(2)
            .saturating_add(1 << 20)
    }

    /// DATA content is still arriving and `total` bytes have come so far. Some: send this
    /// reply and close the connection, without reading the rest.
    pub fn data_received(&self, total: u64) -> Option<Reply> {
        (total > self.hard_cap()).then(|| {
            Reply::new(
                552,
                "5.3.4",
                "message far exceeds the size limit, closing connection",
            )
        })
    }

    pub(super) fn bdat(&mut self, size: u64, last: bool) -> Next {
        if size > self.hard_cap() {
            return Next::Close(Reply::new(
                552,
                "5.3.4",
                "chunk far exceeds the size limit, closing connection",
            ));
        }
        let max = self.max_size();
        match self.tx.as_mut() {
            Some(tx) if tx.recipients.is_empty() && tx.chunks_failed.is_none() => {
                tx.chunks_failed = Some(Reply::new(554, "5.5.1", "no valid recipients"));
            }
            Some(tx) if tx.chunks.is_none() && tx.chunks_failed.is_none() => {
                tx.chunks = Some(Decoder::new(Mode::Chunks, max));
            }
            Some(_) => {}
            None => {
                // The chunk is on the wire anyway: read it, then answer with the error.
                self.tx = Some(Transaction {
                    sender: ReversePath::Null,
                    params: Vec::new(),
                    utf8: false,
                    declared: None,
                    max_size: self.cfg.max_message_size,
                    recipients: Vec::new(),
                    chunks: None,
                    chunks_failed: Some(Reply::new(503, "5.5.1", "need MAIL and RCPT before BDAT")),
                });
            }
        }
        Next::ReadChunk { size, last }
    }

    /// Where the listener puts the bytes of a BDAT chunk (None: drop them).
    pub fn chunk_decoder(&mut self) -> Option<&mut Decoder> {
        self.tx.as_mut().and_then(|t| t.chunks.as_mut())
    }

    /// A BDAT chunk has been read in full.
    pub fn chunk_done(
        &mut self,
        last: bool,
        size: u64,
        now: SystemTime,
        queue_id: QueueId,
    ) -> Content {
        let Some(tx) = self.tx.as_mut() else {
            return Content::Reply(Reply::new(503, "5.5.1", "no transaction"));
        };
        if let Some(reply) = tx.chunks_failed.clone() {
            if last {
                self.tx = None;
            }
            self.errors += 1;
            return Content::Reply(reply);
        }
        if tx.chunks.as_ref().is_some_and(Decoder::over_limit) {
            tx.chunks = None;
            let reply = Self::too_big(self.max_size());
            if let Some(tx) = self.tx.as_mut() {
                tx.chunks_failed = Some(reply.clone());
            }
            if last {
                self.tx = None;
            }
            return Content::Reply(reply);
        }
        if !last {
            return Content::Reply(Reply::new(250, "2.0.0", format!("{size} bytes received")));
        }
        let decoder = tx.chunks.take();
        match decoder {
            Some(d) => self.content_done(d, now, queue_id, "BDAT"),
            None => Content::Reply(Reply::new(503, "5.5.1", "no transaction")),
        }
    }

    fn too_big(max: u64) -> Reply {
        Reply::new(
            552,
            "5.3.4",
            format!("message exceeds the maximum size of {max} bytes"),
        )
    }

    /// The DATA content has ended (`<CRLF>.<CRLF>` seen). The message's `body` is the
    /// Received header followed by the content the decoder holds. A listener that spooled
    /// content ([`Decoder::take`]) takes all of it before this, and the body is then the
    /// header alone, the content following it in the spool file.
    pub fn data_done(&mut self, decoder: Decoder, now: SystemTime, queue_id: QueueId) -> Content {
        self.content_done(decoder, now, queue_id, "DATA")
    }

    fn content_done(
        &mut self,
        decoder: Decoder,
        now: SystemTime,
        queue_id: QueueId,
        _how: &str,
    ) -> Content {
        let Some(tx) = self.tx.take() else {
            return Content::Reply(Reply::new(503, "5.5.1", "no transaction"));
        };
        if decoder.over_limit() {
            return Content::Reply(Self::too_big(tx.max_size));
        }
        // The header section, as far as the decoder kept it (the content may be spooled).
        let received = count_received(decoder.start());
        let content = decoder.finish();
        if received > self.cfg.max_received {
            return Content::Reply(Reply::new(
                554,
                "5.4.6",
                "too many Received headers: mail loop detected",
            ));
        }
        let protocol = match (self.hello == Hello::Ehlo, tx.utf8, self.tls.is_some()) {
            (true, true, true) => "UTF8SMTPS",
            (true, true, false) => "UTF8SMTP",
            (true, false, true) => "ESMTPS",
            (true, false, false) => "ESMTP",
            _ => "SMTP",
        };
        let single = (tx.recipients.len() == 1).then(|| tx.recipients[0].address.as_str());
        let header = Trace {
            helo: &self.helo_name,
            client_ip: self.client_ip,
            hostname: &self.cfg.hostname,
            protocol,
            queue_id: &queue_id,
            tls: self.tls.as_deref(),
            single_recipient: single,
            time: now,
        }
        .header();
        let mut body = Vec::with_capacity(header.len() + content.len() + 2);
        body.extend_from_slice(header.as_bytes());
        body.extend_from_slice(&content);
        Content::Commit(Box::new(NewMessage {
            id: queue_id,
            received_at_ms: to_ms(now),
            sender: tx.sender.to_string(),
            mail_params: tx
                .params
                .iter()
                .map(Param::to_wire)
                .collect::<Vec<_>>()
                .join(" "),
            client: self.client_ip.to_string(),
            helo: self.helo_name.clone(),
            recipients: tx.recipients,
            body,
            authenticated: None,
            held: false,
        }))
    }

    /// Sender authentication (SPF, DKIM, DMARC) evaluated a message [`Content::Commit`]
    /// handed out. Some: refuse it with this reply (DMARC p=reject, when the session refuses
    /// those). None: commit `message`, which now starts with the Authentication-Results header.
    pub fn sender_authenticated(
        &self,
        message: &mut NewMessage,
        evaluation: Evaluation,
    ) -> Option<Reply> {
        if self.dmarc_reject && evaluation.dmarc_reject {
            return Some(Reply::new(
                550,
                "5.7.1",
                "message refused: it fails the sender domain's DMARC policy (p=reject)",
            ));
        }
        let mut body = evaluation.header.into_bytes();
        body.extend_from_slice(&message.body);
        message.body = body;
        message.authenticated = Some(evaluation.authenticated);
        None
    }

    /// The listener's commit finished: `Ok` only once the message is durable.
    pub fn committed(&mut self, id: &str, result: Result<(), StoreError>) -> Reply {
        match result {
            Ok(()) => {
                self.accepted += 1;
                Reply::new(250, "2.0.0", format!("queued as {id}"))
            }
            Err(StoreError::Full) => {
                Reply::new(452, "4.3.1", "insufficient system storage, try again later")
            }
            Err(_) => Reply::new(451, "4.3.0", "local error in processing, try again later"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;

    #[test]
    fn full_transaction() {
        let mut s = session();
        assert_eq!(s.greeting().code, 220);
        assert_eq!(run(&mut s, "EHLO client.test"), 250);
        assert_eq!(
            run(&mut s, "MAIL FROM:<a@sender.test> BODY=8BITMIME SIZE=10"),
            250
        );
        assert_eq!(run(&mut s, "RCPT TO:<u@example.test>"), 250);
        assert_eq!(run(&mut s, "RCPT TO:<u@EXAMPLE.test>"), 250);
        assert_eq!(run(&mut s, "RCPT TO:<u@example.test.>"), 250);
        assert_eq!(run(&mut s, "RCPT TO:<U@example.test>"), 250);
        assert_eq!(run(&mut s, "DATA"), 354);
        let mut d = s.data_decoder();
        assert!(d.feed(b"Subject: hi\r\n\r\nbody\r\n.\r\n").is_some());
        let m = commit(s.data_done(d, SystemTime::UNIX_EPOCH, "q1".into()));
        assert_eq!(m.sender, "a@sender.test");
        assert_eq!(m.mail_params, "BODY=8BITMIME");
        assert_eq!(
            m.recipients
                .iter()
                .map(|r| r.address.as_str())
                .collect::<Vec<_>>(),
            ["u@example.test", "U@example.test"],
            "the same recipient twice is kept once; local parts keep their case"
        );
        assert!(
            m.body
                .starts_with(b"Received: from client.test ([192.0.2.7])")
        );
        assert!(m.body.ends_with(b"\r\nSubject: hi\r\n\r\nbody\r\n"));
        assert_eq!(s.committed("q1", Ok(())).code, 250);
        // The session is ready for the next transaction.
        assert_eq!(run(&mut s, "MAIL FROM:<>"), 250);
    }

    #[test]
    fn oversize_data_and_loops() {
        let mut s = session();
        run(&mut s, "EHLO c.test");
        run(&mut s, "MAIL FROM:<>");
        run(&mut s, "RCPT TO:<u@example.test>");
        run(&mut s, "DATA");
        let mut d = s.data_decoder();
        let mut big = vec![b'x'; 2000];
        big.extend_from_slice(b"\r\n.\r\n");
        assert!(d.feed(&big).is_some());
        match s.data_done(d, SystemTime::UNIX_EPOCH, "q".into()) {
            Content::Reply(r) => assert_eq!(r.code, 552),
            Content::Commit(_) => panic!("oversize message committed"),
        }
        run(&mut s, "MAIL FROM:<>");
        run(&mut s, "RCPT TO:<u@example.test>");
        run(&mut s, "DATA");
        let mut d = s.data_decoder();
        let mut looped = b"Received: x\r\n".repeat(51);
        looped.extend_from_slice(b"\r\n.\r\n");
        d.feed(&looped);
        match s.data_done(d, SystemTime::UNIX_EPOCH, "q".into()) {
            Content::Reply(r) => assert_eq!((r.code, r.status.as_str()), (554, "5.4.6")),
            Content::Commit(_) => panic!("looping message committed"),
        }
    }

    #[test]
    fn bdat_chunks() {
        let mut s = session();
        run(&mut s, "EHLO c.test");
        run(&mut s, "MAIL FROM:<a@b.test>");
        run(&mut s, "RCPT TO:<u@example.test>");
        assert_eq!(
            s.command(b"BDAT 5", std::time::Instant::now()),
            Next::ReadChunk {
                size: 5,
                last: false
            }
        );
        s.chunk_decoder().unwrap().feed(b"Hi\r\nt");
        assert!(
            matches!(s.chunk_done(false, 5, SystemTime::UNIX_EPOCH, "q".into()), Content::Reply(r) if r.code == 250)
        );
        assert_eq!(
            run(&mut s, "MAIL FROM:<a@b.test>"),
            503,
            "no MAIL inside BDAT"
        );
        assert_eq!(
            s.command(b"BDAT 4 LAST", std::time::Instant::now()),
            Next::ReadChunk {
                size: 4,
                last: true
            }
        );
        s.chunk_decoder().unwrap().feed(b"ext\n");
        let m = commit(s.chunk_done(true, 4, SystemTime::UNIX_EPOCH, "q".into()));
        assert!(m.body.ends_with(b"\r\nHi\r\ntext\r\n"));
    }

    #[test]
    fn bdat_without_transaction_is_read_then_refused() {
        let mut s = session();
        run(&mut s, "EHLO c.test");
        assert_eq!(
            s.command(b"BDAT 3 LAST", std::time::Instant::now()),
            Next::ReadChunk {
                size: 3,
                last: true
            }
        );
        assert!(s.chunk_decoder().is_none());
        assert!(
            matches!(s.chunk_done(true, 3, SystemTime::UNIX_EPOCH, "q".into()), Content::Reply(r) if r.code == 503)
        );
        assert_eq!(run(&mut s, "MAIL FROM:<>"), 250);
    }

    /// A session inside a transaction for u@example.test, ready for DATA or BDAT.
    fn in_transaction() -> Session {
        let mut s = session();
        run(&mut s, "EHLO c.test");
        run(&mut s, "MAIL FROM:<a@b.test>");
        run(&mut s, "RCPT TO:<u@example.test>");
        s
    }

    #[test]
    fn content_far_beyond_the_limit_closes_the_connection() {
        // The hard cap for max_message_size 1000: 2 × 1000 + 1 MiB.
        let cap = 2000 + (1 << 20);
        let mut s = in_transaction();
        assert_eq!(run(&mut s, "DATA"), 354);
        assert_eq!(s.data_received(cap), None, "up to the cap, read on");
        assert_eq!(
            wire(&s.data_received(cap + 1).unwrap()),
            "552 5.3.4 message far exceeds the size limit, closing connection\r\n"
        );
        let mut s = in_transaction();
        assert_eq!(
            s.command(
                format!("BDAT {cap} LAST").as_bytes(),
                std::time::Instant::now()
            ),
            Next::ReadChunk {
                size: cap,
                last: true
            }
        );
        let mut s = in_transaction();
        assert_eq!(
            closing(s.command(
                format!("BDAT {}", cap + 1).as_bytes(),
                std::time::Instant::now()
            )),
            "552 5.3.4 chunk far exceeds the size limit, closing connection\r\n"
        );
    }

    fn evaluation(dmarc_reject: bool) -> Evaluation {
        Evaluation {
            header: "Authentication-Results: mx2.test; spf=pass\r\n".into(),
            authenticated: true,
            dmarc_reject,
        }
    }

    fn received(s: &mut Session) -> NewMessage {
        assert_eq!(run(s, "DATA"), 354);
        let mut d = s.data_decoder();
        d.feed(b"x\r\n.\r\n");
        commit(s.data_done(d, SystemTime::UNIX_EPOCH, "q".into()))
    }

    #[test]
    fn dmarc_reject_is_refused_only_when_configured() {
        let mut s = in_transaction().with_dmarc_reject(true);
        let mut m = received(&mut s);
        assert_eq!(
            wire(&s.sender_authenticated(&mut m, evaluation(true)).unwrap()),
            "550 5.7.1 message refused: it fails the sender domain's DMARC policy (p=reject)\r\n"
        );
        assert_eq!(run(&mut s, "MAIL FROM:<>"), 250, "the transaction is over");

        let mut s = in_transaction();
        let mut m = received(&mut s);
        assert_eq!(s.sender_authenticated(&mut m, evaluation(true)), None);
        assert!(
            m.body
                .starts_with(b"Authentication-Results: mx2.test; spf=pass\r\nReceived: ")
        );
        assert_eq!(m.authenticated, Some(true));
    }

    #[test]
    fn the_commit_decides_the_final_reply() {
        let mut s = in_transaction();
        received(&mut s);
        assert_eq!(
            wire(&s.committed("q1", Err(StoreError::Full))),
            "452 4.3.1 insufficient system storage, try again later\r\n"
        );
        assert_eq!(
            wire(&s.committed("q1", Err(StoreError::Closed))),
            "451 4.3.0 local error in processing, try again later\r\n"
        );
        assert_eq!(s.accepted, 0);
        assert_eq!(
            wire(&s.committed("q1", Ok(()))),
            "250 2.0.0 queued as q1\r\n"
        );
        assert_eq!(s.accepted, 1);
    }
}
