//! `mx2 queue …`: the queue through the running server's admin API, with
//! `list`, `show` and `export` falling back to reading the store directly when the server
//! is not running (after a crash, say), as `postqueue -p` does. Tables for people,
//! `--json` for scripts, progress on standard error for long actions.

use super::api::{Api, CallError, Target, encode};
use crate::date::rfc5322_date;
use crate::queue::embedded::inspect::Inspector;
use crate::queue::{Filter, Listed, Shown, now_ms};
use clap::Subcommand;
use serde_json::json;
use std::io::Write;
use std::process::ExitCode;
use std::time::{Duration, UNIX_EPOCH};

/// Which messages: filters for listings and bulk actions.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct Select {
    /// Only messages with recipients in this domain.
    #[arg(long)]
    domain: Option<String>,
    /// Only messages whose sender contains this text.
    #[arg(long)]
    sender: Option<String>,
    /// Only messages with a recipient that contains this text.
    #[arg(long)]
    recipient: Option<String>,
    /// Only messages older than this, e.g. 2h or 3d.
    #[arg(long)]
    older_than: Option<String>,
    /// Only messages in this state: queued, deferred, active or held.
    #[arg(long)]
    state: Option<String>,
}

impl Select {
    fn is_empty(&self) -> bool {
        self.domain.is_none()
            && self.sender.is_none()
            && self.recipient.is_none()
            && self.older_than.is_none()
            && self.state.is_none()
    }

    fn query(&self) -> String {
        [
            ("domain", &self.domain),
            ("sender", &self.sender),
            ("recipient", &self.recipient),
            ("older_than", &self.older_than),
            ("state", &self.state),
        ]
        .iter()
        .filter_map(|(k, v)| v.as_ref().map(|v| format!("{k}={}", encode(v))))
        .collect::<Vec<_>>()
        .join("&")
    }
}

#[derive(Subcommand, Debug)]
pub enum QueueCmd {
    /// Messages waiting for delivery, oldest first.
    List {
        #[command(flatten)]
        target: Target,
        #[command(flatten)]
        select: Select,
        /// At most this many messages.
        #[arg(long, default_value_t = 1000)]
        limit: usize,
        #[arg(long)]
        json: bool,
        /// Read the queue file even if the server is running.
        #[arg(long)]
        offline: bool,
    },
    /// One message: envelope and each recipient's state, attempts and last reply.
    Show {
        id: String,
        #[command(flatten)]
        target: Target,
        #[arg(long)]
        json: bool,
        #[arg(long)]
        offline: bool,
    },
    /// The stored message (.eml) on standard output.
    Export {
        id: String,
        #[command(flatten)]
        target: Target,
        #[arg(long)]
        offline: bool,
    },
    /// Deliver now: these messages, a domain's, or everything (primaries are treated as up).
    Flush {
        ids: Vec<String>,
        #[command(flatten)]
        target: Target,
        /// Everything held for this domain.
        #[arg(long, conflicts_with = "ids")]
        domain: Option<String>,
    },
    /// Keep messages from delivery until released.
    Hold(Bulk),
    /// Let held messages go (due at once).
    Release(Bulk),
    /// Remove messages without telling anyone.
    Delete(Bulk),
    /// Give up on messages now: their senders get a bounce as the domain's policy allows.
    Bounce(Bulk),
    /// Accept queue.sqlite as it reads now as the queue (after restoring a backup or
    /// salvaging a damaged file). The server must be stopped; a copy of the files is kept.
    Adopt {
        /// The configuration file (for state_dir).
        #[arg(short, long, default_value = "/etc/mx2/mx2.toml")]
        config: std::path::PathBuf,
    },
    /// Start over with an empty queue: move the queue's files into state_dir/damaged-TIME.
    /// The server must be stopped; the mail in those files is then lost to mx2.
    Reset {
        /// The configuration file (for state_dir).
        #[arg(short, long, default_value = "/etc/mx2/mx2.toml")]
        config: std::path::PathBuf,
        /// Say that you mean it.
        #[arg(long)]
        i_understand: bool,
    },
}

/// Messages named by id, or selected by filters, or all of them.
#[derive(clap::Args, Debug)]
pub struct Bulk {
    ids: Vec<String>,
    #[command(flatten)]
    target: Target,
    #[command(flatten)]
    select: Select,
    /// Every message in the queue.
    #[arg(long, conflicts_with = "ids")]
    all: bool,
}

pub(super) fn age(ms: i64) -> String {
    crate::admin::dashboard::duration((now_ms() - ms).max(0) / 1000)
}

fn when(ms: i64) -> String {
    rfc5322_date(UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0)))
}

pub(super) fn fail(e: impl std::fmt::Display, code: u8) -> ExitCode {
    eprintln!("mx2: {e}");
    ExitCode::from(code)
}

/// The queue file, for when the server does not answer.
fn offline(api: &Api, why: &str) -> Result<Inspector, ExitCode> {
    let Some(c) = &api.config else {
        return Err(fail(
            format!("{why}; and without a readable --config the queue file cannot be read either"),
            1,
        ));
    };
    if matches!(c.storage, crate::config::StorageConfig::Postgres(_)) {
        return Err(fail(
            format!("{why}; the queue is in PostgreSQL: ask another node with --admin URL"),
            1,
        ));
    }
    if !why.is_empty() {
        eprintln!("mx2: {why}; reading the queue file directly");
    }
    Inspector::open(&c.state_dir).map_err(|e| fail(e, 1))
}

/// Runs `online` against the API; on no answer (or `--offline`), `offline_read` on the file.
fn read<T>(
    api: &Api,
    force_offline: bool,
    online: impl FnOnce(&Api) -> Result<T, CallError>,
    offline_read: impl FnOnce(&Inspector) -> Result<T, String>,
) -> Result<T, ExitCode> {
    let why = if force_offline {
        String::new()
    } else {
        match online(api) {
            Ok(v) => return Ok(v),
            Err(CallError::Failed(e)) => return Err(fail(e, 1)),
            Err(CallError::Unreachable(e)) => e,
        }
    };
    let q = offline(api, &why)?;
    offline_read(&q).map_err(|e| fail(e, 1))
}

pub(super) fn api(target: &Target) -> Result<Api, ExitCode> {
    Api::new(target).map_err(|e| fail(e, 2))
}

fn parse<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> Result<T, CallError> {
    serde_json::from_value(v).map_err(|e| CallError::Failed(format!("unexpected answer: {e}")))
}

/// Every message that matches, following the API's pages.
fn list_all(api: &Api, select: &Select, limit: usize) -> Result<Vec<Listed>, CallError> {
    let mut out: Vec<Listed> = Vec::new();
    let mut after: Option<String> = None;
    while out.len() < limit {
        let page = (limit - out.len()).min(crate::queue::MAX_LIST);
        let mut q = format!("/api/v1/queue?limit={page}");
        let filters = select.query();
        if !filters.is_empty() {
            q.push('&');
            q.push_str(&filters);
        }
        if let Some(a) = &after {
            q.push_str(&format!("&after={}", encode(a)));
        }
        let v = api.json("GET", &q, None)?;
        let rows: Vec<Listed> = parse(v["messages"].clone())?;
        let done = rows.len() < page || v["next"].is_null();
        after = rows.last().map(|r| r.id.clone());
        out.extend(rows);
        if done {
            break;
        }
    }
    Ok(out)
}

fn print_list(list: &[Listed]) {
    println!(
        "{:<32}  {:>7}  {:>9}  {:<8}  {:<30}  RECIPIENTS / LAST REPLY",
        "QUEUE ID", "AGE", "SIZE", "STATE", "SENDER"
    );
    for m in list {
        let sender = if m.sender.is_empty() { "<>" } else { &m.sender };
        println!(
            "{:<32}  {:>7}  {:>9}  {:<8}  {:<30}  {}",
            m.id,
            age(m.received_at_ms),
            m.size,
            m.state.name(),
            sender,
            m.pending.join(" ")
        );
        if let Some(r) = &m.last_reply {
            println!("{:>96}{r}", "");
        }
    }
}

/// The listing's last line: how many are shown of how many there are, and how to see more.
fn listing_summary(shown: usize, total: u64) -> String {
    if total <= shown as u64 {
        return format!("{shown} message(s) waiting");
    }
    format!(
        "showing {shown} of {total} message(s) waiting; see more with --limit {total}, or narrow \
         the listing with --domain, --sender, --recipient, --older-than or --state"
    )
}

fn print_shown(m: &Shown) {
    println!(
        "queue id   {}\nreceived   {} ({} ago) from {} [{}]",
        m.id,
        when(m.received_at_ms),
        age(m.received_at_ms),
        m.helo,
        m.client
    );
    println!(
        "sender     <{}> {}\nsize       {} bytes",
        m.sender, m.mail_params, m.size
    );
    for r in &m.recipients {
        println!(
            "recipient  <{}> {}{} after {} attempt(s); next try {}",
            r.address,
            r.status.name(),
            if r.held { " (held)" } else { "" },
            r.attempts,
            when(r.next_attempt_ms)
        );
        if let Some(reply) = &r.last_reply {
            println!("           last reply: {reply}");
        }
    }
}

/// What a bulk action did, in messages: those changed, and (when some were not) how many of
/// those selected needed no change (already held, not held, in delivery, or gone).
fn bulk_summary(past: &str, selected: usize, changed: u64) -> String {
    let unchanged = (selected as u64).saturating_sub(changed);
    match unchanged {
        0 => format!("{past} {changed} message(s)"),
        n => {
            format!("{past} {changed} message(s); {n} of the {selected} selected needed no change")
        }
    }
}

/// Applies a bulk action in batches, with progress on standard error.
fn bulk(action: &str, past: &str, b: Bulk) -> ExitCode {
    let api = match api(&b.target) {
        Ok(a) => a,
        Err(c) => return c,
    };
    let ids = if !b.ids.is_empty() {
        b.ids
    } else if b.all || !b.select.is_empty() {
        match list_all(&api, &b.select, usize::MAX) {
            Ok(rows) => rows.into_iter().map(|r| r.id).collect(),
            Err(CallError::Failed(e) | CallError::Unreachable(e)) => return fail(e, 1),
        }
    } else {
        return fail(
            format!(
                "name the messages: queue ids, or --domain/--sender/--recipient/--older-than/--state, or --all (see `mx2 queue {action} --help`)"
            ),
            2,
        );
    };
    let total = ids.len();
    let mut affected = 0u64;
    let progress = total > 1000;
    for (i, chunk) in ids.chunks(1000).enumerate() {
        let body = json!({ "action": action, "ids": chunk });
        match api.json("POST", "/api/v1/queue/actions", Some(&body)) {
            Ok(v) => affected += v["affected"].as_u64().unwrap_or(0),
            Err(CallError::Failed(e) | CallError::Unreachable(e)) => {
                if progress {
                    eprintln!();
                }
                return fail(format!("{e} (after {} of {total} messages)", i * 1000), 1);
            }
        }
        if progress {
            eprint!(
                "\r{action}: {} of {total} messages",
                (i * 1000 + chunk.len()).min(total)
            );
            let _ = std::io::stderr().flush();
        }
    }
    if progress {
        eprintln!();
    }
    println!("{}", bulk_summary(past, total, affected));
    ExitCode::SUCCESS
}

pub fn run(cmd: QueueCmd) -> ExitCode {
    match cmd {
        QueueCmd::List {
            target,
            select,
            limit,
            json,
            offline,
        } => {
            let api = match api(&target) {
                Ok(a) => a,
                Err(c) => return c,
            };
            let list = match read(
                &api,
                offline,
                |api| list_all(api, &select, limit),
                |q| {
                    let f = crate::admin::api_filter(&select.query()).map_err(|e| e.to_string())?;
                    q.list(&Filter { limit, ..f })
                },
            ) {
                Ok(l) => l,
                Err(c) => return c,
            };
            // A full listing may not be all: say how many there are.
            let total = if list.len() >= limit.min(crate::queue::MAX_LIST) {
                let filters = select.query();
                match read(
                    &api,
                    offline,
                    |api| {
                        let v = api.json("GET", &format!("/api/v1/queue/count?{filters}"), None)?;
                        Ok(v["total"].as_u64().unwrap_or(0))
                    },
                    |q| q.count(&crate::admin::api_filter(&filters)?),
                ) {
                    Ok(n) => n.max(list.len() as u64),
                    Err(c) => return c,
                }
            } else {
                list.len() as u64
            };
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&list).unwrap_or_default()
                );
                if total > list.len() as u64 {
                    eprintln!("mx2: {}", listing_summary(list.len(), total));
                }
            } else {
                print_list(&list);
                println!("{}", listing_summary(list.len(), total));
            }
            ExitCode::SUCCESS
        }
        QueueCmd::Show {
            id,
            target,
            json,
            offline,
        } => {
            let api = match api(&target) {
                Ok(a) => a,
                Err(c) => return c,
            };
            let path = format!("/api/v1/queue/{}", encode(&id));
            let shown = read(
                &api,
                offline,
                |api| {
                    api.json("GET", &path, None)
                        .and_then(parse::<Shown>)
                        .map(Some)
                },
                |q| q.show(&id),
            );
            match shown {
                Ok(Some(m)) if json => {
                    println!("{}", serde_json::to_string_pretty(&m).unwrap_or_default());
                    ExitCode::SUCCESS
                }
                Ok(Some(m)) => {
                    print_shown(&m);
                    ExitCode::SUCCESS
                }
                Ok(None) => fail(format!("no message {id} in the queue"), 1),
                Err(c) => c,
            }
        }
        QueueCmd::Export {
            id,
            target,
            offline,
        } => {
            let api = match api(&target) {
                Ok(a) => a,
                Err(c) => return c,
            };
            let path = format!("/api/v1/queue/{}/eml", encode(&id));
            match read(
                &api,
                offline,
                |api| api.call("GET", &path, None).map(Some),
                |q| q.export(&id),
            ) {
                Ok(Some(body)) => {
                    let _ = std::io::stdout().write_all(&body);
                    ExitCode::SUCCESS
                }
                Ok(None) => fail(format!("no message {id} in the queue"), 1),
                Err(c) => c,
            }
        }
        QueueCmd::Flush {
            ids,
            target,
            domain,
        } => {
            let api = match api(&target) {
                Ok(a) => a,
                Err(c) => return c,
            };
            let result = if ids.is_empty() {
                let path = match &domain {
                    Some(d) => format!("/api/v1/flush?domain={}", encode(d)),
                    None => "/api/v1/flush".to_string(),
                };
                api.json("POST", &path, None)
            } else {
                api.json(
                    "POST",
                    "/api/v1/queue/actions",
                    Some(&json!({ "action": "flush", "ids": ids })),
                )
            };
            match result {
                Ok(v) => {
                    println!(
                        "{} recipient(s) due now",
                        v["affected"].as_u64().unwrap_or(0)
                    );
                    ExitCode::SUCCESS
                }
                Err(CallError::Failed(e) | CallError::Unreachable(e)) => fail(e, 1),
            }
        }
        QueueCmd::Hold(b) => bulk("hold", "held", b),
        QueueCmd::Release(b) => bulk("release", "released", b),
        QueueCmd::Delete(b) => bulk("delete", "deleted", b),
        QueueCmd::Bounce(b) => bulk("bounce", "bounced", b),
        QueueCmd::Adopt { config } => super::recover::adopt(&config),
        QueueCmd::Reset {
            config,
            i_understand,
        } => super::recover::reset(&config, i_understand),
    }
}
