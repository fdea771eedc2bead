//! `mx2 inbox passwd ADDRESS`: gives a user of the emergency inbox a password (asked twice
//! on the terminal without echo, or one line from standard input with `--password-stdin`),
//! hashed here with argon2id and stored through the admin API, so the password itself
//! never leaves this process; `--delete` removes it. `mx2 inbox invite ADDRESS --to ALT`
//! has the server mail a one-time login code to an alternate address. `mx2 inbox log
//! [ADDRESS|--domain D]` prints the inbox's events (logins, reads, deletes, passwords,
//! invites).

use super::api::{Target, encode};
use super::queue::fail;
use clap::Subcommand;
use std::io::{BufRead, IsTerminal, Write};
use std::process::ExitCode;

#[derive(Subcommand, Debug)]
pub enum InboxCmd {
    /// Set (or with --delete remove) the password ADDRESS logs in to the inbox with. The
    /// address's case and a +tag do not matter: they all name one mailbox.
    Passwd {
        address: String,
        /// Read the password as one line from standard input (for scripts).
        #[arg(long, conflicts_with = "delete")]
        password_stdin: bool,
        /// Remove the address's password: it can no longer log in.
        #[arg(long)]
        delete: bool,
        #[command(flatten)]
        target: Target,
        /// Print the API's answer as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Mail ADDRESS's user a one-time login code (good for one login within
    /// `[inbox] code_validity`, 15 minutes by default) at an alternate address.
    Invite {
        address: String,
        /// The alternate address the code is mailed to (not in ADDRESS's domain).
        #[arg(long)]
        to: String,
        #[command(flatten)]
        target: Target,
        /// Print the API's answer as JSON.
        #[arg(long)]
        json: bool,
    },
    /// The emergency inbox's events, newest first: logins (good or refused, with the
    /// client's address and the protocol), messages read, deletes, password changes and
    /// invites. Kept in the server's memory (the last 10,000; a restart forgets them).
    Log {
        /// Only this address's mailbox (its case and a +tag do not matter).
        #[arg(conflicts_with = "domain")]
        address: Option<String>,
        /// Only the mailboxes of this domain.
        #[arg(long)]
        domain: Option<String>,
        /// At most this many events.
        #[arg(long, default_value_t = 1000)]
        limit: usize,
        #[command(flatten)]
        target: Target,
        /// Print the API's answer as JSON.
        #[arg(long)]
        json: bool,
    },
}

/// The most a password may be (bytes).
const MAX_PASSWORD: usize = 1024;

pub fn run(cmd: InboxCmd) -> ExitCode {
    match cmd {
        InboxCmd::Passwd {
            address,
            password_stdin,
            delete,
            target,
            json,
        } => passwd(address, password_stdin, delete, target, json),
        InboxCmd::Invite {
            address,
            to,
            target,
            json,
        } => invite(address, to, target, json),
        InboxCmd::Log {
            address,
            domain,
            limit,
            target,
            json,
        } => {
            let mut path = format!("/api/v1/inbox/log?limit={limit}");
            if let Some(a) = address {
                path.push_str(&format!("&address={}", encode(&a)));
            }
            if let Some(d) = domain {
                path.push_str(&format!("&domain={}", encode(&d)));
            }
            super::tenant::call(&target, "GET", &path, None, json, print_log)
        }
    }
}

fn print_log(v: &serde_json::Value) {
    let events = v["events"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    if events.is_empty() {
        println!("no inbox events (the server keeps them in memory since it started)");
    }
    for e in events {
        let when = e["at_ms"]
            .as_i64()
            .and_then(chrono::DateTime::from_timestamp_millis)
            .map_or_else(
                || "-".into(),
                |t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
            );
        println!("{when}  {}", super::api::text(&e["text"]));
    }
}

fn invite(address: String, to: String, target: Target, json: bool) -> ExitCode {
    let path = format!("/api/v1/inbox/users/{}/invite", encode(&address));
    let body = serde_json::json!({ "to": to });
    super::tenant::call(&target, "POST", &path, Some(body), json, |v| {
        println!(
            "{}: a one-time login code is queued for {} (queue id {})",
            super::api::text(&v["address"]),
            super::api::text(&v["to"]),
            super::api::text(&v["queue_id"]),
        );
    })
}

fn passwd(
    address: String,
    password_stdin: bool,
    delete: bool,
    target: Target,
    json: bool,
) -> ExitCode {
    let path = format!("/api/v1/inbox/users/{}", encode(&address));
    if delete {
        return super::tenant::call(&target, "DELETE", &path, None, json, |v| {
            println!(
                "{}: inbox password removed",
                super::api::text(&v["address"])
            );
        });
    }
    let password = match read_password(password_stdin) {
        Ok(p) => p,
        Err(e) => return fail(e, 2),
    };
    let hash = match crate::inbox::auth::hash_password(&password) {
        Ok(h) => h,
        Err(e) => return fail(e, 1),
    };
    let body = serde_json::json!({ "hash": hash });
    super::tenant::call(&target, "PUT", &path, Some(body), json, |v| {
        let what = if v["replaced"] == true {
            "changed"
        } else {
            "set"
        };
        println!(
            "{}: inbox password {what}; the user logs in with this address as the user name",
            super::api::text(&v["address"])
        );
    })
}

fn read_password(from_stdin: bool) -> Result<String, String> {
    let stdin = std::io::stdin();
    let password = if from_stdin {
        let mut line = String::new();
        stdin
            .lock()
            .read_line(&mut line)
            .map_err(|e| format!("standard input: {e}"))?;
        line.trim_end_matches(['\r', '\n']).to_string()
    } else {
        if !stdin.is_terminal() {
            return Err(
                "standard input is not a terminal: give the password as one line with --password-stdin"
                    .into(),
            );
        }
        let first = prompt("New inbox password: ")?;
        let second = prompt("Again: ")?;
        if first != second {
            return Err("the two passwords differ; nothing was changed".into());
        }
        first
    };
    if password.is_empty() {
        return Err("the password is empty; nothing was changed".into());
    }
    if password.len() > MAX_PASSWORD {
        return Err(format!("the password is longer than {MAX_PASSWORD} bytes"));
    }
    Ok(password)
}

/// Asks on the terminal with echo off (restored even when reading fails).
fn prompt(question: &str) -> Result<String, String> {
    use rustix::termios::{LocalModes, OptionalActions, tcgetattr, tcsetattr};
    let stdin = std::io::stdin();
    let mut err = std::io::stderr();
    let _ = write!(err, "{question}");
    let _ = err.flush();
    let saved = tcgetattr(&stdin).map_err(|e| format!("terminal: {e}"))?;
    let mut quiet = saved.clone();
    quiet.local_modes.remove(LocalModes::ECHO);
    tcsetattr(&stdin, OptionalActions::Flush, &quiet).map_err(|e| format!("terminal: {e}"))?;
    let mut line = String::new();
    let read = stdin.lock().read_line(&mut line);
    let _ = tcsetattr(&stdin, OptionalActions::Flush, &saved);
    let _ = writeln!(err);
    read.map_err(|e| format!("terminal: {e}"))?;
    Ok(line.trim_end_matches(['\r', '\n']).to_string())
}
