//! `mx2 status` and `mx2 reload`: the running server's state (each primary, what is held
//! for it, whether SMTP is under stress) and a reload that says whether it worked. Both only
//! talk to the admin API.

use super::api::{CallError, Target};
use super::queue::{age, api, fail};
use std::process::ExitCode;

/// `mx2 status`: each primary's state and what is held for it.
pub fn status(target: &Target, json: bool) -> ExitCode {
    let api = match api(target) {
        Ok(a) => a,
        Err(c) => return c,
    };
    let v = match api.json("GET", "/api/v1/status", None) {
        Ok(v) => v,
        Err(CallError::Failed(e) | CallError::Unreachable(e)) => return fail(e, 1),
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
        return ExitCode::SUCCESS;
    }
    let q = &v["queue"];
    println!(
        "mx2 {} on {}, up {}",
        v["version"].as_str().unwrap_or(""),
        v["hostname"].as_str().unwrap_or(""),
        crate::admin::dashboard::duration(v["uptime_s"].as_i64().unwrap_or(0))
    );
    println!(
        "queue: {} message(s), {} recipient(s), {} bytes; oldest {}",
        q["messages"],
        q["recipients"],
        q["bytes"],
        q["oldest_age_s"]
            .as_i64()
            .map(crate::admin::dashboard::duration)
            .unwrap_or_else(|| "-".into())
    );
    if v["smtp_stress"].as_bool() == Some(true) {
        println!(
            "SMTP under stress: connections above [smtp] stress_threshold, waits for clients cut to stress_timeout"
        );
    }
    println!(
        "\n{:<28}  {:<5}  {:>12}  {:>9}  {:>8}  {:>9}  DOMAINS",
        "PRIMARY", "STATE", "SINCE", "MESSAGES", "OLDEST", "DELIV/MIN"
    );
    let (mut down, mut stale) = (0, 0);
    for p in v["primaries"].as_array().into_iter().flatten() {
        let up = p["up"].as_bool().unwrap_or(false);
        down += usize::from(!up);
        let last_known = p["stale"].as_bool().unwrap_or(false);
        stale += usize::from(last_known);
        println!(
            "{:<28}  {:<5}  {:>12}  {:>9}  {:>8}  {:>9}  {}",
            p["primary"].as_str().unwrap_or(""),
            match (up, last_known) {
                (true, false) => "up",
                (true, true) => "up?",
                (false, false) => "DOWN",
                (false, true) => "DOWN?",
            },
            age(p["since_ms"].as_i64().unwrap_or(0)),
            p["messages"].as_u64().unwrap_or(0),
            p["oldest_age_s"]
                .as_i64()
                .map(crate::admin::dashboard::duration)
                .unwrap_or_else(|| "-".into()),
            p["delivered_last_minute"].as_u64().unwrap_or(0),
            p["domains"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|d| d.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    if down > 0 {
        println!("\n{down} primary(ies) down: their mail is held and delivered when they answer");
    }
    if stale > 0 {
        println!(
            "?: last known state, recorded before mx2 started; not confirmed by a probe or a delivery yet"
        );
    }
    ExitCode::SUCCESS
}

/// `mx2 reload`: the server reads its configuration file again.
pub fn reload(target: &Target) -> ExitCode {
    let api = match api(target) {
        Ok(a) => a,
        Err(c) => return c,
    };
    match api.json("POST", "/api/v1/reload", None) {
        Ok(v) => {
            println!("reloaded: {}", v["detail"].as_str().unwrap_or(""));
            ExitCode::SUCCESS
        }
        Err(CallError::Failed(e) | CallError::Unreachable(e)) => {
            fail(format!("not reloaded: {e}"), 1)
        }
    }
}
