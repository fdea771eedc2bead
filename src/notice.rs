//! Mail mx2 writes itself (alert mails, one-time inbox login codes: plain text from
//! `postmaster@` the hostname; TLS reports, written whole by `tlsrpt`), with the null sender
//! (so nothing ever bounces back to mx2), queued durably like any received mail and
//! delivered by the scheduler.

use crate::queue::{NewMessage, NewRecipient, Store, StoreError, new_queue_id, now_ms};
use crate::scheduler::Scheduler;

/// One mail to write.
pub struct Notice<'a> {
    pub to: &'a str,
    pub subject: &'a str,
    /// The body (lines end in `\n` or `\r\n`).
    pub text: &'a str,
    /// Names the kind in the Message-ID (`<id.KIND@host>`).
    pub kind: &'a str,
}

/// Queues the mail (durable when it returns) and wakes the scheduler; returns its queue id.
pub async fn queue(
    store: &dyn Store,
    scheduler: &Scheduler,
    hostname: &str,
    n: Notice<'_>,
) -> Result<String, StoreError> {
    let id = new_queue_id();
    let date = crate::date::rfc5322_date(std::time::SystemTime::now());
    let text = n.text.replace("\r\n", "\n").replace('\n', "\r\n");
    let body = format!(
        "From: mx2 on {h} <postmaster@{h}>\r\nTo: <{to}>\r\nSubject: {subject}\r\nDate: {date}\r\nMessage-ID: <{id}.{kind}@{h}>\r\nAuto-Submitted: auto-generated\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{text}\r\n",
        h = hostname,
        to = n.to,
        subject = n.subject,
        kind = n.kind,
    );
    insert(
        store,
        scheduler,
        id,
        &[n.to.to_string()],
        body.into_bytes(),
        hostname,
    )
    .await
}

/// Queues a complete message mx2 wrote (headers and body, CRLF line ends) to `to`, with the
/// null sender; durable when it returns. Returns its queue id.
pub async fn queue_message(
    store: &dyn Store,
    scheduler: &Scheduler,
    to: &[String],
    body: Vec<u8>,
    hostname: &str,
) -> Result<String, StoreError> {
    insert(store, scheduler, new_queue_id(), to, body, hostname).await
}

async fn insert(
    store: &dyn Store,
    scheduler: &Scheduler,
    id: String,
    to: &[String],
    body: Vec<u8>,
    hostname: &str,
) -> Result<String, StoreError> {
    let msg = NewMessage {
        id: id.clone(),
        received_at_ms: now_ms(),
        sender: String::new(),
        mail_params: String::new(),
        client: "127.0.0.1".into(),
        helo: hostname.to_string(),
        recipients: to
            .iter()
            .map(|a| NewRecipient {
                address: a.clone(),
                domain: a
                    .rsplit_once('@')
                    .map(|(_, d)| d.to_ascii_lowercase())
                    .unwrap_or_default(),
                params: String::new(),
            })
            .collect(),
        body,
        authenticated: None,
        held: false,
    };
    store.insert(msg).await?;
    scheduler.wake();
    Ok(id)
}
