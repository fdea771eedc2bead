//! What a fire drill found: each step's status, what it saw, what to do about it, and how
//! long it took; the drill's outcome follows from its steps. Pure data, with the text the
//! command line prints; stored as JSON (`queue::StoredDrill`).

use serde::{Deserialize, Serialize};

/// How one step went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    /// Worth fixing, but the backup path works.
    Warn,
    /// The backup path is broken here.
    Fail,
    /// Not run (an earlier step failed, or the drill was skipped).
    Skip,
}

impl Status {
    fn mark(self) -> &'static str {
        match self {
            Status::Ok => "ok  ",
            Status::Warn => "WARN",
            Status::Fail => "FAIL",
            Status::Skip => "skip",
        }
    }
}

/// One step of a drill.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Step {
    /// `primary`, `mx`, `connect`, `tls_in`, `recipient`, `accepted`, `held`, `handoff`,
    /// `tls_out`.
    pub name: String,
    pub status: Status,
    pub detail: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub advice: Option<String>,
    pub ms: u64,
}

/// How a drill ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Passed,
    Failed,
    /// Not run: the primary is down (the backup is doing real work).
    Skipped,
}

impl Outcome {
    pub fn name(self) -> &'static str {
        match self {
            Outcome::Passed => crate::queue::DRILL_PASSED,
            Outcome::Failed => "failed",
            Outcome::Skipped => crate::queue::DRILL_SKIPPED,
        }
    }
}

/// Who started a drill.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Trigger {
    Manual,
    Scheduled,
}

/// One drill, start to end.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Drill {
    pub domain: String,
    pub at_ms: i64,
    pub trigger: Trigger,
    pub outcome: Outcome,
    pub duration_ms: u64,
    /// The drill message's Message-ID, when one was sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_id: Option<String>,
    /// Its queue id at mx2, once accepted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue_id: Option<String>,
    pub steps: Vec<Step>,
}

impl Drill {
    /// The outcome its steps add up to: failed when one failed, skipped when the first
    /// (the primary's health) was skipped, else passed.
    pub fn outcome_of(steps: &[Step]) -> Outcome {
        if steps.iter().any(|s| s.status == Status::Fail) {
            Outcome::Failed
        } else if steps.first().is_some_and(|s| s.status == Status::Skip) {
            Outcome::Skipped
        } else {
            Outcome::Passed
        }
    }

    /// The first failed step, for one-line summaries and alerts.
    pub fn failure(&self) -> Option<&Step> {
        self.steps.iter().find(|s| s.status == Status::Fail)
    }

    /// The row the store keeps.
    pub fn stored(&self) -> crate::queue::StoredDrill {
        crate::queue::StoredDrill {
            domain: self.domain.clone(),
            at_ms: self.at_ms,
            outcome: self.outcome.name().to_string(),
            duration_ms: i64::try_from(self.duration_ms).unwrap_or(i64::MAX),
            result: serde_json::to_string(self).unwrap_or_default(),
        }
    }

    /// For people: a heading, then one line per step with its advice below it.
    pub fn text(&self) -> String {
        let trigger = match self.trigger {
            Trigger::Manual => "manual",
            Trigger::Scheduled => "scheduled",
        };
        let at = std::time::UNIX_EPOCH
            + std::time::Duration::from_millis(u64::try_from(self.at_ms).unwrap_or(0));
        let mut out = format!(
            "Drill of {} ({trigger}, {}): {} in {:.1}s\n",
            self.domain,
            crate::date::rfc5322_date(at),
            self.outcome.name().to_uppercase(),
            self.duration_ms as f64 / 1000.0
        );
        if let Some(id) = &self.message_id {
            out.push_str(&format!("  message {id}\n"));
        }
        for s in &self.steps {
            out.push_str(&format!(
                "  [{}] {:<9} {:>6} ms  {}\n",
                s.status.mark(),
                s.name,
                s.ms,
                s.detail
            ));
            if let Some(a) = &s.advice {
                out.push_str(&format!("         fix: {a}\n"));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(name: &str, status: Status) -> Step {
        Step {
            name: name.into(),
            status,
            detail: format!("{name} detail"),
            advice: (status == Status::Fail).then(|| "do this".to_string()),
            ms: 3,
        }
    }

    #[test]
    fn outcome_follows_the_steps() {
        use Status::*;
        assert_eq!(
            Drill::outcome_of(&[step("mx", Ok), step("tls_in", Warn)]),
            Outcome::Passed
        );
        assert_eq!(
            Drill::outcome_of(&[step("mx", Ok), step("handoff", Fail), step("x", Skip)]),
            Outcome::Failed
        );
        assert_eq!(
            Drill::outcome_of(&[step("primary", Skip)]),
            Outcome::Skipped
        );
    }

    #[test]
    fn stored_and_read_back() {
        let d = Drill {
            domain: "a.test".into(),
            at_ms: 1_700_000_000_000,
            trigger: Trigger::Manual,
            outcome: Outcome::Failed,
            duration_ms: 1500,
            message_id: Some("<x@y>".into()),
            queue_id: None,
            steps: vec![step("mx", Status::Ok), step("handoff", Status::Fail)],
        };
        let s = d.stored();
        assert_eq!((s.outcome.as_str(), s.duration_ms), ("failed", 1500));
        let back: Drill = serde_json::from_str(&s.result).unwrap();
        assert_eq!(back, d);
        assert_eq!(d.failure().unwrap().name, "handoff");
        let text = d.text();
        assert!(text.starts_with("Drill of a.test (manual"), "{text}");
        assert!(
            text.contains("[FAIL] handoff") && text.contains("fix: do this"),
            "{text}"
        );
    }
}
