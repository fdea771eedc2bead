//! The result of `mx2 check`: findings with a level, a reason and a one-line fix, a verdict,
//! and how it is shown (text with ✓ ⚠ ✗, or JSON). Pure.

use serde::Serialize;
use std::fmt::Write;
use std::net::IpAddr;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// Information only (not part of the verdict).
    Info,
    Ok,
    Warn,
    Fail,
}

impl Level {
    fn mark(self) -> &'static str {
        match self {
            Level::Info => "ℹ",
            Level::Ok => "✓",
            Level::Warn => "⚠",
            Level::Fail => "✗",
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    /// A stable name for scripts, e.g. `mx.count` or `diversity.subnet`.
    pub check: String,
    pub level: Level,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Address {
    pub ip: IpAddr,
    pub ptr: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct MxHost {
    pub preference: u16,
    pub name: String,
    pub addresses: Vec<Address>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub domain: String,
    pub mx: Vec<MxHost>,
    pub findings: Vec<Finding>,
    pub verdict: Level,
}

impl Report {
    pub fn new(domain: &str) -> Self {
        Self {
            domain: domain.to_string(),
            mx: Vec::new(),
            findings: Vec::new(),
            verdict: Level::Ok,
        }
    }

    pub fn add(
        &mut self,
        check: impl Into<String>,
        level: Level,
        message: impl Into<String>,
        fix: Option<&str>,
    ) {
        self.findings.push(Finding {
            check: check.into(),
            level,
            message: message.into(),
            fix: fix.map(str::to_string),
        });
        if level > self.verdict {
            self.verdict = level;
        }
    }

    /// 0: all good, 1: warnings, 2: failures.
    pub fn exit_code(&self) -> u8 {
        match self.verdict {
            Level::Fail => 2,
            Level::Warn => 1,
            _ => 0,
        }
    }

    pub fn text(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "mx2 check {}", self.domain);
        for h in &self.mx {
            let addrs: Vec<String> = h.addresses.iter().map(|a| a.ip.to_string()).collect();
            let _ = writeln!(
                out,
                "  MX {:>3} {} ({})",
                h.preference,
                h.name,
                if addrs.is_empty() {
                    "no address".into()
                } else {
                    addrs.join(", ")
                }
            );
        }
        for f in &self.findings {
            let _ = writeln!(out, "{} {}", f.level.mark(), f.message);
            if let Some(fix) = &f.fix {
                let _ = writeln!(out, "    fix: {fix}");
            }
        }
        let count = |l| self.findings.iter().filter(|f| f.level == l).count();
        let verdict = match self.verdict {
            Level::Fail => "FAIL",
            Level::Warn => "WARN",
            _ => "OK",
        };
        let _ = writeln!(
            out,
            "verdict: {verdict} (failures: {}, warnings: {})",
            count(Level::Fail),
            count(Level::Warn)
        );
        out
    }

    pub fn json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
    }
}
