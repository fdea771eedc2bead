//! The admin API as the command line uses it: where it is (from the config file, or
//! `--admin URL`), the token (`--token-file`, else the environment's `MX2_TOKEN`, else the
//! config's `admin.token_file`; a tenant uses its own token either of the first two ways),
//! and blocking JSON calls with errors a person can act on.

use crate::config::Config;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The environment variable that may hold the token (the operator's or a tenant's).
pub const TOKEN_VAR: &str = "MX2_TOKEN";

/// How long one API call may take (a bulk action on 10 000 messages included).
const CALL_LIMIT: Duration = Duration::from_secs(300);

/// Where and how to reach a running server.
#[derive(clap::Args, Debug, Clone)]
pub struct Target {
    /// The configuration file (for the admin address, its token and the queue's location).
    #[arg(short, long, default_value = "/etc/mx2/mx2.toml")]
    pub config: PathBuf,
    /// The admin API's base URL, e.g. http://127.0.0.1:8025 (default: from the config).
    #[arg(long)]
    pub admin: Option<String>,
    /// A file holding the token: the operator's, or a tenant's from `mx2 tenant token`
    /// (default: the environment's MX2_TOKEN, else the config's admin.token_file).
    #[arg(long)]
    pub token_file: Option<PathBuf>,
}

pub struct Api {
    pub base: String,
    token: Option<String>,
    pub config: Option<Config>,
    /// Whether the server at `base` was found to serve this config's queue.
    checked: std::cell::Cell<bool>,
}

/// Why a call failed: the server is not there (the caller may read the store instead), or
/// it answered with an error.
pub enum CallError {
    Unreachable(String),
    Failed(String),
}

impl Api {
    pub fn new(t: &Target) -> Result<Self, String> {
        let config = match Config::load(&t.config) {
            Ok(c) => Some(c),
            Err(e) if t.admin.is_none() => return Err(e.to_string()),
            Err(_) => None,
        };
        let base = match (&t.admin, config.as_ref().and_then(|c| c.admin.listen)) {
            (Some(url), _) => url.trim_end_matches('/').to_string(),
            (None, Some(addr)) => {
                let host = match addr.ip() {
                    ip if ip.is_unspecified() && ip.is_ipv4() => "127.0.0.1".to_string(),
                    ip if ip.is_unspecified() => "[::1]".to_string(),
                    std::net::IpAddr::V6(ip) => format!("[{ip}]"),
                    ip => ip.to_string(),
                };
                format!("http://{host}:{}", addr.port())
            }
            (None, None) => {
                return Err(format!(
                    "{}: the admin API is turned off (admin.listen = \"\"); set it, or pass --admin URL",
                    t.config.display()
                ));
            }
        };
        let from_env = std::env::var(TOKEN_VAR)
            .ok()
            .map(|t| t.trim().to_string())
            .filter(|t| !t.is_empty());
        let token = match (&t.token_file, from_env) {
            (Some(p), _) => Some(read_token(p)?),
            (None, Some(t)) => Some(t),
            (None, None) => config.as_ref().and_then(|c| c.admin.token.clone()),
        };
        Ok(Self {
            base,
            token,
            config,
            checked: std::cell::Cell::new(false),
        })
    }

    /// Makes sure the server that answers at `base` keeps the queue this config names: with
    /// two instances on one machine, the other one's admin port must not be mistaken for
    /// this one's (its queue would be shown, or acted on).
    fn check_identity(&self) -> Result<(), CallError> {
        let Some(c) = &self.config else {
            return Ok(());
        };
        if self.checked.get() || !matches!(c.storage, crate::config::StorageConfig::Embedded) {
            return Ok(());
        }
        let raw = self.raw("GET", "/api/v1/identity", None)?;
        let v: serde_json::Value = serde_json::from_slice(&raw).unwrap_or_default();
        let theirs = v["state_dir"].as_str().map(std::path::PathBuf::from);
        // The queue's identity decides when both sides can tell it (paths may be spelt
        // differently); otherwise the paths, canonical where they exist.
        let ours_id = crate::queue::embedded::guard::queue_id(&c.state_dir);
        let same_queue = match (ours_id.as_deref(), v["queue_id"].as_str()) {
            (Some(a), Some(b)) => Some(a == b),
            _ => None,
        };
        let same = |a: &Path, b: &Path| match (a.canonicalize(), b.canonicalize()) {
            (Ok(x), Ok(y)) => x == y,
            _ => a == b,
        };
        match theirs {
            _ if same_queue == Some(true) => {
                self.checked.set(true);
                Ok(())
            }
            Some(t) if same_queue.is_none() && same(&t, &c.state_dir) => {
                self.checked.set(true);
                Ok(())
            }
            other => Err(CallError::Unreachable(format!(
                "the admin API at {} belongs to another mx2 (its queue: {}), not the one with state_dir {}",
                self.base,
                other.map_or("not an embedded queue".into(), |p| p.display().to_string()),
                c.state_dir.display()
            ))),
        }
    }

    /// One call; `body` is JSON. Returns the response body.
    pub fn call(
        &self,
        method: &'static str,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<Vec<u8>, CallError> {
        self.check_identity()?;
        self.raw(method, path, body)
    }

    fn raw(
        &self,
        method: &'static str,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<Vec<u8>, CallError> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| CallError::Failed(format!("cannot start the runtime: {e}")))?;
        let url = format!("{}{path}", self.base);
        let text = body.map(|b| b.to_string());
        let result = rt.block_on(crate::http::send(crate::http::Request {
            bearer: self.token.as_deref(),
            body: text.as_deref().map(|t| crate::http::Body {
                content_type: "application/json",
                bytes: t.as_bytes(),
            }),
            ..crate::http::Request::new(method, &url, CALL_LIMIT)
        }));
        result.map_err(|e| match e.status {
            None => CallError::Unreachable(format!(
                "the server does not answer at {} ({}): is it running, and is admin.listen right?",
                self.base, e.reason
            )),
            Some(401) => CallError::Failed(format!(
                "{}: the token was refused (unknown, or revoked): give it with --token-file, {TOKEN_VAR} or admin.token_file",
                self.base
            )),
            Some(_) => CallError::Failed(
                serde_json::from_str::<serde_json::Value>(
                    e.reason.split_once(": ").map_or("", |(_, b)| b),
                )
                .ok()
                .and_then(|v| v["error"].as_str().map(str::to_string))
                .unwrap_or(e.reason),
            ),
        })
    }

    pub fn json(
        &self,
        method: &'static str,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<serde_json::Value, CallError> {
        let raw = self.call(method, path, body)?;
        serde_json::from_slice(&raw)
            .map_err(|e| CallError::Failed(format!("{}{path}: not JSON: {e}", self.base)))
    }
}

fn read_token(p: &Path) -> Result<String, String> {
    let t = std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()))?;
    Ok(t.trim().to_string())
}

/// Prints an API call's answer: pretty JSON with `json`, else as `text` prints it; an error
/// on standard error with exit code 1.
pub fn answer(
    result: Result<serde_json::Value, CallError>,
    json: bool,
    text: impl FnOnce(&serde_json::Value),
) -> std::process::ExitCode {
    match result {
        Ok(v) if json => {
            println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
            std::process::ExitCode::SUCCESS
        }
        Ok(v) => {
            text(&v);
            std::process::ExitCode::SUCCESS
        }
        Err(CallError::Failed(e) | CallError::Unreachable(e)) => super::queue::fail(e, 1),
    }
}

/// A JSON string for people: `-` when it is not one (null, missing).
pub fn text(v: &serde_json::Value) -> &str {
    v.as_str().unwrap_or("-")
}

/// `%`-encodes a query value.
pub fn encode(v: &str) -> String {
    v.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
