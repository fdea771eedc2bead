//! `mx2 tenant …`: the customers of a backup-MX service, through the admin API (operator
//! only): add, remove, list, and make or revoke the API tokens with which a tenant sees its
//! own domains and mail (`MX2_TOKEN` or `--token-file` for `mx2` commands, or a bearer
//! token in its scripts). A token is printed once, when it is made.

use super::api::{Target, answer, encode, text as s};
use super::queue::api;
use clap::Subcommand;
use serde_json::{Value, json};
use std::process::ExitCode;

#[derive(Subcommand, Debug)]
pub enum TenantCmd {
    /// Add a tenant (a customer whose domains mx2 backs up).
    Add {
        name: String,
        /// Where its alerts are posted (JSON), besides the operator's.
        #[arg(long, value_name = "URL")]
        webhook: Option<String>,
        /// Who gets its alerts by mail, besides the operator.
        #[arg(long, value_name = "ADDRESS")]
        alert_to: Option<String>,
        #[command(flatten)]
        target: Target,
        /// Print the API's answer as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Remove a tenant and every token it has (refused while domains are its).
    Remove {
        name: String,
        #[command(flatten)]
        target: Target,
        /// Print the API's answer as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Every tenant with its domains and token ids.
    List {
        #[command(flatten)]
        target: Target,
        /// Print the API's answer as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Make an API token for a tenant; it is printed this once (only its hash is kept).
    Token {
        name: String,
        #[command(flatten)]
        target: Target,
        /// Print the API's answer as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Revoke one of a tenant's tokens, by the id `mx2 tenant list` shows.
    Revoke {
        name: String,
        id: String,
        #[command(flatten)]
        target: Target,
        /// Print the API's answer as JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Calls the API and prints the answer as JSON, or as text through `text`.
pub(super) fn call(
    target: &Target,
    method: &'static str,
    path: &str,
    body: Option<Value>,
    json: bool,
    text: impl FnOnce(&Value),
) -> ExitCode {
    match api(target) {
        Ok(api) => answer(api.json(method, path, body.as_ref()), json, text),
        Err(c) => c,
    }
}

fn print_list(v: &Value) {
    println!(
        "{:<24}  {:<30}  {:<18}  {:<30}  WEBHOOK",
        "TENANT", "DOMAINS", "TOKENS", "ALERTS TO"
    );
    let join = |list: &Value, field: Option<&str>| {
        let items: Vec<&str> = list
            .as_array()
            .into_iter()
            .flatten()
            .map(|i| s(field.map_or(i, |f| &i[f])))
            .collect();
        if items.is_empty() {
            "-".to_string()
        } else {
            items.join(",")
        }
    };
    for t in v["tenants"].as_array().into_iter().flatten() {
        println!(
            "{:<24}  {:<30}  {:<18}  {:<30}  {}",
            s(&t["name"]),
            join(&t["domains"], None),
            join(&t["tokens"], Some("id")),
            s(&t["alert_to"]),
            s(&t["webhook"])
        );
    }
}

pub fn run(cmd: TenantCmd) -> ExitCode {
    let tenant = |name: &str| format!("/api/v1/tenants/{}", encode(name));
    match cmd {
        TenantCmd::Add {
            name,
            webhook,
            alert_to,
            target,
            json,
        } => {
            let body = json!({ "name": name, "webhook": webhook, "alert_to": alert_to });
            call(&target, "POST", "/api/v1/tenants", Some(body), json, |v| {
                println!(
                    "added tenant {n}; give it domains with `mx2 domain add DOMAIN --tenant {n}` and a token with `mx2 tenant token {n}`",
                    n = s(&v["name"])
                );
            })
        }
        TenantCmd::Remove { name, target, json } => {
            call(&target, "DELETE", &tenant(&name), None, json, |v| {
                println!("removed tenant {} and its tokens", s(&v["removed"]));
            })
        }
        TenantCmd::List { target, json } => {
            call(&target, "GET", "/api/v1/tenants", None, json, print_list)
        }
        TenantCmd::Token { name, target, json } => {
            let p = format!("{}/tokens", tenant(&name));
            call(&target, "POST", &p, None, json, |v| {
                println!(
                    "token {} for tenant {name}:\n\n  {}\n",
                    s(&v["id"]),
                    s(&v["token"])
                );
                println!(
                    "Keep it now: it cannot be shown again (mx2 keeps only its hash). The tenant sends it as `Authorization: Bearer TOKEN`, or gives it to mx2 commands with MX2_TOKEN or --token-file. Revoke it with `mx2 tenant revoke {name} {}`.",
                    s(&v["id"])
                );
                if let Some(w) = v["warning"].as_str() {
                    eprintln!("mx2: warning: {w}");
                }
            })
        }
        TenantCmd::Revoke {
            name,
            id,
            target,
            json,
        } => {
            let p = format!("{}/tokens/{}", tenant(&name), encode(&id));
            call(&target, "DELETE", &p, None, json, |v| {
                println!(
                    "revoked token {} of tenant {name}: it is refused from now on",
                    s(&v["revoked"])
                );
            })
        }
    }
}
