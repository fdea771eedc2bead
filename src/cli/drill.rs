//! `mx2 drill DOMAIN`: runs a fire drill of the domain on the running server and prints what
//! each step found (exit code 1 when it failed); `--history` prints the domain's last
//! results instead. Through the admin API.

use super::api::{CallError, Target, answer, encode};
use super::queue::{api, fail};
use crate::drill::report::{Drill, Outcome};
use std::process::ExitCode;

pub fn run(domain: &str, history: bool, target: &Target, json: bool) -> ExitCode {
    let api = match api(target) {
        Ok(a) => a,
        Err(c) => return c,
    };
    let path = format!("/api/v1/drills/{}", encode(domain));
    if history {
        return answer(api.json("GET", &path, None), json, |v| {
            let drills: Vec<Drill> = v["drills"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|d| serde_json::from_value(d.clone()).ok())
                .collect();
            if drills.is_empty() {
                println!("no drill of {domain} yet: run `mx2 drill {domain}`");
            }
            for d in drills {
                println!("{}", d.text());
            }
        });
    }
    let result = api.json("POST", &path, None);
    let failed = match &result {
        Ok(v) => serde_json::from_value::<Drill>(v.clone())
            .map(|d| d.outcome == Outcome::Failed)
            .unwrap_or(true),
        Err(_) => false,
    };
    let parsed = result.and_then(|v| {
        serde_json::from_value::<Drill>(v.clone())
            .map(|_| v)
            .map_err(|e| CallError::Failed(format!("unexpected answer: {e}")))
    });
    let code = answer(parsed, json, |v| {
        if let Ok(d) = serde_json::from_value::<Drill>(v.clone()) {
            print!("{}", d.text());
        }
    });
    if failed && code == ExitCode::SUCCESS {
        return fail(format!("the drill of {domain} failed"), 1);
    }
    code
}
