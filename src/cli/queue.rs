//! `mx2 queue list|show|export`: the queue read straight from the store, so it works while the
//! server is stopped too. Tables for people, `--json` for scripts.

use crate::inbound::received::rfc5322_date;
use crate::queue::inspect::Inspector;
use crate::queue::now_ms;
use clap::Subcommand;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, UNIX_EPOCH};

#[derive(Subcommand, Debug)]
pub enum QueueCmd {
    /// Messages waiting for delivery, oldest first.
    List {
        #[arg(short, long, default_value = "/etc/mx2/mx2.toml")]
        config: PathBuf,
        /// Only messages with recipients in this domain.
        #[arg(long)]
        domain: Option<String>,
        #[arg(long, default_value_t = 1000)]
        limit: usize,
        #[arg(long)]
        json: bool,
    },
    /// One message: envelope and each recipient's state, attempts and last reply.
    Show {
        id: String,
        #[arg(short, long, default_value = "/etc/mx2/mx2.toml")]
        config: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// The stored message (.eml) on standard output.
    Export {
        id: String,
        #[arg(short, long, default_value = "/etc/mx2/mx2.toml")]
        config: PathBuf,
    },
}

fn age(ms: i64) -> String {
    let s = (now_ms() - ms).max(0) / 1000;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m", s / 60),
        3600..86_400 => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d{:02}h", s / 86_400, s % 86_400 / 3600),
    }
}

fn when(ms: i64) -> String {
    rfc5322_date(UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0)))
}

fn open(config: &std::path::Path) -> Result<Inspector, ExitCode> {
    let c = crate::config::Config::load(config).map_err(|e| {
        eprintln!("mx2: {e}");
        ExitCode::from(2)
    })?;
    Inspector::open(&c.state_dir).map_err(|e| {
        eprintln!("mx2: {e}");
        ExitCode::from(1)
    })
}

/// The exit for a message that is not there (Ok) or a store error.
fn missing(r: Result<(), String>, id: &str) -> ExitCode {
    match r {
        Ok(()) => eprintln!("mx2: no message {id} in the queue"),
        Err(e) => eprintln!("mx2: {e}"),
    }
    ExitCode::from(1)
}

pub fn run(cmd: QueueCmd) -> ExitCode {
    match cmd {
        QueueCmd::List {
            config,
            domain,
            limit,
            json,
        } => {
            let q = match open(&config) {
                Ok(q) => q,
                Err(c) => return c,
            };
            let filter = crate::queue::Filter {
                domain,
                limit,
                ..Default::default()
            };
            let list = match q.list(&filter) {
                Ok(l) => l,
                Err(e) => {
                    eprintln!("mx2: {e}");
                    return ExitCode::from(1);
                }
            };
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&list).unwrap_or_default()
                );
                return ExitCode::SUCCESS;
            }
            println!(
                "{:<32}  {:>7}  {:>9}  {:<30}  RECIPIENTS / LAST REPLY",
                "QUEUE ID", "AGE", "SIZE", "SENDER"
            );
            for m in &list {
                let sender = if m.sender.is_empty() { "<>" } else { &m.sender };
                println!(
                    "{:<32}  {:>7}  {:>9}  {:<30}  {}",
                    m.id,
                    age(m.received_at_ms),
                    m.size,
                    sender,
                    m.pending.join(" ")
                );
                if let Some(r) = &m.last_reply {
                    println!("{:>86}{r}", "");
                }
            }
            println!("{} message(s) waiting", list.len());
            ExitCode::SUCCESS
        }
        QueueCmd::Show { id, config, json } => {
            let q = match open(&config) {
                Ok(q) => q,
                Err(c) => return c,
            };
            match q.show(&id) {
                Ok(Some(m)) if json => {
                    println!("{}", serde_json::to_string_pretty(&m).unwrap_or_default());
                    ExitCode::SUCCESS
                }
                Ok(Some(m)) => {
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
                            "recipient  <{}> {} after {} attempt(s); next try {}",
                            r.address,
                            r.status,
                            r.attempts,
                            when(r.next_attempt_ms)
                        );
                        if let Some(reply) = &r.last_reply {
                            println!("           last reply: {reply}");
                        }
                    }
                    ExitCode::SUCCESS
                }
                other => missing(other.map(|_| ()), &id),
            }
        }
        QueueCmd::Export { id, config } => {
            let q = match open(&config) {
                Ok(q) => q,
                Err(c) => return c,
            };
            match q.export(&id) {
                Ok(Some(body)) => {
                    let _ = std::io::stdout().write_all(&body);
                    ExitCode::SUCCESS
                }
                other => missing(other.map(|_| ()), &id),
            }
        }
    }
}
