//! `mx2 domain …`: the domains a running server backs up besides its configuration file's,
//! through the admin API: add (pending until the owner publishes a TXT record, or
//! `--verified`), change, remove (with or without the mail queued for it), list, show,
//! verify, and replace a domain's recipient list. Settings are `[[domain]]` keys; the
//! server checks them exactly as it checks the file.

use super::api::{Api, CallError, Target, answer, encode, text as s};
use super::queue::{api, fail};
use super::settings::{Limits, Route, assignments};
use clap::Subcommand;
use serde_json::{Value, json};
use std::io::Read;
use std::process::ExitCode;

#[derive(Subcommand, Debug)]
pub enum DomainCmd {
    /// Back up a domain: pending (mail refused) until its owner publishes the TXT record
    /// printed here and `mx2 domain verify` finds it, or active at once with --verified.
    Add {
        name: String,
        #[command(flatten)]
        route: Route,
        #[command(flatten)]
        limits: Limits,
        /// The tenant (customer) it belongs to.
        #[arg(long)]
        tenant: Option<String>,
        /// Vouch for the domain: active at once, without the TXT challenge.
        #[arg(long)]
        verified: bool,
        /// Any `[[domain]]` key, e.g. `--set lifetime=14d` or `--set 'primary=["a:25"]'`
        /// (VALUE is read as TOML, else as a string); repeatable.
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
        #[command(flatten)]
        target: Target,
        /// Print the API's answer as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Change a stored domain's settings, limits or tenant.
    Set {
        name: String,
        #[command(flatten)]
        limits: Limits,
        #[command(flatten)]
        route: Route,
        /// Give it to this tenant.
        #[arg(long, conflicts_with = "no_tenant")]
        tenant: Option<String>,
        /// Make it nobody's.
        #[arg(long)]
        no_tenant: bool,
        /// Set any `[[domain]]` key (VALUE read as TOML, else as a string); repeatable.
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
        /// Remove a key (back to the default); repeatable.
        #[arg(long = "unset", value_name = "KEY")]
        unset: Vec<String>,
        #[command(flatten)]
        target: Target,
        /// Print the API's answer as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Stop backing up a stored domain: its mail is refused from now on. What is queued for
    /// it is still delivered, unless --purge drops it.
    Remove {
        name: String,
        /// Also drop the mail queued for it (nobody is told).
        #[arg(long)]
        purge: bool,
        #[command(flatten)]
        target: Target,
        /// Print the API's answer as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Every domain: the configuration file's and the stored ones.
    List {
        #[command(flatten)]
        target: Target,
        /// Print the API's answer as JSON.
        #[arg(long)]
        json: bool,
    },
    /// One domain: state, owner, settings, limits, challenge, last audit, queued mail.
    Show {
        name: String,
        #[command(flatten)]
        target: Target,
        /// Print the API's answer as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Look for the domain's TXT challenge now and make it active when it is there (exit
    /// code 1 while it stays pending); also runs the MX audit of `mx2 check`.
    Verify {
        name: String,
        #[command(flatten)]
        target: Target,
        /// Print the API's answer as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Replace a domain's recipient list with the addresses in FILE (`-`: standard input):
    /// one a line, `#` comments, `@domain` for every address of a domain.
    Recipients {
        name: String,
        file: String,
        #[command(flatten)]
        target: Target,
        /// Print the API's answer as JSON.
        #[arg(long)]
        json: bool,
    },
}

/// A domain's details, one per line.
fn print_domain(v: &Value) {
    let source = if v["source"] == "file" {
        "configuration file"
    } else {
        "stored"
    };
    println!(
        "domain     {} ({source}, {})",
        s(&v["name"]),
        s(&v["state"])
    );
    if v["shadowed"] == true {
        println!("           shadowed: the configuration file's [[domain]] of this name applies");
    }
    if let Some(t) = v["tenant"].as_str() {
        println!("tenant     {t}");
    }
    if let Some(e) = v["invalid"].as_str() {
        println!("INVALID    {e} (it takes no mail until fixed with `mx2 domain set`)");
    }
    for (k, val) in v["settings"].as_object().into_iter().flatten() {
        println!("setting    {k} = {val}");
    }
    let limits: Vec<String> = v["limits"]
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(_, l)| !l.is_null())
        .map(|(k, l)| format!("{k} {l}"))
        .collect();
    if !limits.is_empty() {
        println!("limits     {}", limits.join(", "));
    }
    if let Some(c) = v["challenge"].as_object() {
        println!(
            "challenge  publish {}. IN TXT \"{}\", then run `mx2 domain verify {}`",
            s(&c["record"]),
            s(&c["value"]),
            s(&v["name"])
        );
    }
    if let Some(a) = v["audit"].as_str() {
        println!("MX audit   {a} (details: `mx2 check {}`)", s(&v["name"]));
    }
    println!(
        "queue      {} message(s), {} bytes",
        v["queue"]["messages"], v["queue"]["bytes"]
    );
}

fn print_list(v: &Value) {
    println!(
        "{:<40}  {:<6}  {:<7}  {:<16}  {:>9}  {:>12}  NOTE",
        "DOMAIN", "SOURCE", "STATE", "TENANT", "MESSAGES", "BYTES"
    );
    for d in v["domains"].as_array().into_iter().flatten() {
        let note = if d["shadowed"] == true {
            "shadowed by the file"
        } else if d["invalid"].is_string() {
            "INVALID settings: see `mx2 domain show`"
        } else if d["challenge"].is_object() {
            "waiting for its TXT record"
        } else {
            ""
        };
        println!(
            "{:<40}  {:<6}  {:<7}  {:<16}  {:>9}  {:>12}  {note}",
            s(&d["name"]),
            s(&d["source"]),
            s(&d["state"]),
            s(&d["tenant"]),
            d["queue"]["messages"],
            d["queue"]["bytes"]
        );
    }
}

fn read_list(file: &str) -> Result<String, String> {
    if file == "-" {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .map_err(|e| format!("standard input: {e}"))?;
        return Ok(text);
    }
    std::fs::read_to_string(file).map_err(|e| format!("{file}: {e}"))
}

fn path(name: &str) -> String {
    format!("/api/v1/domains/{}", encode(name))
}

pub fn run(cmd: DomainCmd) -> ExitCode {
    match cmd {
        DomainCmd::Add {
            name,
            route,
            limits,
            tenant,
            verified,
            set,
            target,
            json,
        } => {
            let mut settings = route.keys(false);
            settings.extend(limits.keys());
            if let Err(e) = assignments(&set, &mut settings) {
                return fail(e, 2);
            }
            let api = match api(&target) {
                Ok(a) => a,
                Err(c) => return c,
            };
            let body = json!({
                "name": name, "settings": settings, "tenant": tenant, "verified": verified,
            });
            answer(
                api.json("POST", "/api/v1/domains", Some(&body)),
                json,
                |v| {
                    println!("added {} ({})", s(&v["name"]), s(&v["state"]));
                    println!("DNS records to publish:");
                    for record in v["publish"].as_array().into_iter().flatten() {
                        println!("  {}", s(record));
                    }
                    println!("{}", s(&v["next"]));
                },
            )
        }
        DomainCmd::Set {
            name,
            limits,
            route,
            tenant,
            no_tenant,
            set,
            unset,
            target,
            json,
        } => {
            let mut settings = limits.keys();
            settings.extend(route.keys(true));
            if let Err(e) = assignments(&set, &mut settings) {
                return fail(e, 2);
            }
            for k in unset {
                settings.insert(k, Value::Null);
            }
            let mut body = json!({ "settings": settings });
            match (tenant, no_tenant) {
                (Some(t), _) => body["tenant"] = json!(t),
                (None, true) => body["tenant"] = Value::Null,
                (None, false) if settings.is_empty() => {
                    return fail(
                        format!("nothing to change for {name}: see `mx2 domain set --help`"),
                        2,
                    );
                }
                (None, false) => {}
            }
            let api = match api(&target) {
                Ok(a) => a,
                Err(c) => return c,
            };
            answer(api.json("PATCH", &path(&name), Some(&body)), json, |v| {
                println!("changed {}", s(&v["name"]));
                print_domain(v);
            })
        }
        DomainCmd::Remove {
            name,
            purge,
            target,
            json,
        } => {
            let api = match api(&target) {
                Ok(a) => a,
                Err(c) => return c,
            };
            let p = format!("{}{}", path(&name), if purge { "?purge=true" } else { "" });
            answer(api.json("DELETE", &p, None), json, |v| {
                let removed = s(&v["removed"]);
                println!("removed {removed}: mail for it is refused from now on");
                match (v["purged"].as_u64(), v["held"].as_u64()) {
                    (Some(n), _) => println!("dropped {n} message(s) that were queued for it"),
                    (None, Some(0)) => println!("nothing was queued for it"),
                    (None, Some(n)) => println!(
                        "{n} message(s) queued for it stay and are still delivered (drop them with `mx2 queue delete --domain {removed}`)"
                    ),
                    (None, None) => {}
                }
            })
        }
        DomainCmd::List { target, json } => {
            let api = match api(&target) {
                Ok(a) => a,
                Err(c) => return c,
            };
            answer(api.json("GET", "/api/v1/domains", None), json, print_list)
        }
        DomainCmd::Show { name, target, json } => {
            let api = match api(&target) {
                Ok(a) => a,
                Err(c) => return c,
            };
            answer(api.json("GET", &path(&name), None), json, print_domain)
        }
        DomainCmd::Verify { name, target, json } => verify(&name, &target, json),
        DomainCmd::Recipients {
            name,
            file,
            target,
            json,
        } => {
            let list = match read_list(&file) {
                Ok(text) => crate::admin::domains::recipient_lines(&text),
                Err(e) => return fail(e, 1),
            };
            let api = match api(&target) {
                Ok(a) => a,
                Err(c) => return c,
            };
            let p = format!("{}/recipients", path(&name));
            answer(api.json("PUT", &p, Some(&json!(list))), json, |v| {
                println!(
                    "{}: {} recipient address(es) stored; they replace the previous list",
                    s(&v["domain"]),
                    v["recipients"]
                );
            })
        }
    }
}

/// `mx2 domain verify`: exit code 0 once the domain is active, 1 while it stays pending.
fn verify(name: &str, target: &Target, json: bool) -> ExitCode {
    let api: Api = match api(target) {
        Ok(a) => a,
        Err(c) => return c,
    };
    let p = format!("{}/verify", path(name));
    let v = match api.json("POST", &p, None) {
        Ok(v) => v,
        Err(CallError::Failed(e) | CallError::Unreachable(e)) => return fail(e, 1),
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
    } else {
        println!("{}", s(&v["message"]));
        for f in v["found"].as_array().into_iter().flatten() {
            println!("  found at {}: \"{}\"", s(&v["record"]), s(f));
        }
        if let Some(a) = v["audit_verdict"].as_str() {
            println!("MX audit: {a} (details: `mx2 check {}`)", s(&v["domain"]));
        }
    }
    if v["state"] == "active" {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}
