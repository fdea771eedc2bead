//! What `mx2 domain add|set` send as a domain's settings: `[[domain]]` keys from the route
//! options (`--primary`, `--route`), the limit options, and `--set KEY=VALUE` (VALUE read as
//! TOML, else as a plain string). The server checks them; nothing is checked here but syntax.

use serde_json::{Map, Value, json};

/// Where a domain's mail goes.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct Route {
    /// A primary mail server; repeat for more (tried in order).
    #[arg(long = "primary", value_name = "HOST:PORT")]
    primary: Vec<String>,
    /// `mx`: deliver to the domain's MX hosts more preferred than this server instead.
    #[arg(long, value_name = "mx", conflicts_with = "primary")]
    route: Option<String>,
}

impl Route {
    /// The keys to set: `primary` or `route`, and with `clear_other` the other one
    /// removed (a new domain has nothing to remove).
    pub fn keys(&self, clear_other: bool) -> Map<String, Value> {
        let mut m = Map::new();
        let (set, other) = if !self.primary.is_empty() {
            (("primary", json!(self.primary)), "route")
        } else if let Some(r) = &self.route {
            (("route", json!(r)), "primary")
        } else {
            return m;
        };
        m.insert(set.0.into(), set.1);
        if clear_other {
            m.insert(other.into(), Value::Null);
        }
        m
    }
}

/// A domain's own limits.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct Limits {
    /// Messages for it the queue may hold.
    #[arg(long, value_name = "N")]
    max_queue_messages: Option<u64>,
    /// Bytes of its mail the queue may hold, e.g. 2GB.
    #[arg(long, value_name = "SIZE")]
    max_queue_bytes: Option<String>,
    /// How long its mail is kept, e.g. 14d.
    #[arg(long, value_name = "DURATION")]
    lifetime: Option<String>,
    /// The largest message for it, e.g. 25MB.
    #[arg(long, value_name = "SIZE")]
    max_message_size: Option<String>,
    /// Recipients in it accepted per minute.
    #[arg(long, value_name = "N")]
    recipients_per_minute: Option<u32>,
}

impl Limits {
    pub fn keys(&self) -> Map<String, Value> {
        let mut m = Map::new();
        let mut put = |k: &str, v: Option<Value>| {
            if let Some(v) = v {
                m.insert(k.into(), v);
            }
        };
        put(
            "max_queue_messages",
            self.max_queue_messages.map(Value::from),
        );
        put(
            "max_queue_bytes",
            self.max_queue_bytes.clone().map(Value::from),
        );
        put("lifetime", self.lifetime.clone().map(Value::from));
        put(
            "max_message_size",
            self.max_message_size.clone().map(Value::from),
        );
        put(
            "recipients_per_minute",
            self.recipients_per_minute.map(Value::from),
        );
        m
    }
}

/// `KEY=VALUE` with VALUE read as TOML (`14`, `true`, `["a:25"]`, `"text"`), else taken as
/// a plain string (`14d`, `2GB`).
pub fn assignment(arg: &str) -> Result<(String, Value), String> {
    let Some((key, value)) = arg.split_once('=') else {
        return Err(format!("--set {arg}: expected KEY=VALUE"));
    };
    let key = key.trim();
    if key.is_empty() || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(format!(
            "--set {arg}: `{key}` is not a key name (letters, digits and _)"
        ));
    }
    let value = value.trim();
    let parsed = format!("v = {value}")
        .parse::<toml::Table>()
        .ok()
        .and_then(|mut t| t.remove("v"))
        .filter(|v| !matches!(v, toml::Value::Datetime(_)))
        .and_then(|v| serde_json::to_value(v).ok());
    Ok((
        key.to_string(),
        parsed.unwrap_or_else(|| Value::String(value.to_string())),
    ))
}

pub fn assignments(args: &[String], into: &mut Map<String, Value>) -> Result<(), String> {
    for a in args {
        let (k, v) = assignment(a)?;
        into.insert(k, v);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_values_are_toml_or_plain_strings() {
        assert_eq!(assignment("max_queue_messages=100").unwrap().1, json!(100));
        assert_eq!(assignment("standby=true").unwrap().1, json!(true));
        assert_eq!(
            assignment(r#"primary=["a.example:25", "b.example:25"]"#).unwrap(),
            ("primary".into(), json!(["a.example:25", "b.example:25"]))
        );
        assert_eq!(assignment("lifetime=14d").unwrap().1, json!("14d"));
        assert_eq!(assignment("max_queue_bytes = 2GB").unwrap().1, json!("2GB"));
        assert_eq!(assignment(r#"tls="verify""#).unwrap().1, json!("verify"));
        assert_eq!(assignment("bounce=none").unwrap().1, json!("none"));
        assert_eq!(assignment("x=1979-05-27").unwrap().1, json!("1979-05-27"));
        assert!(assignment("lifetime").unwrap_err().contains("KEY=VALUE"));
        assert!(assignment("=3").unwrap_err().contains("not a key"));
        assert!(assignment("a b=3").is_err());
    }

    #[test]
    fn a_route_replaces_the_other_kind() {
        let r = Route {
            primary: vec!["a.example:25".into()],
            route: None,
        };
        assert_eq!(
            Value::Object(r.keys(true)),
            json!({"primary": ["a.example:25"], "route": null})
        );
        assert_eq!(
            Value::Object(r.keys(false)),
            json!({"primary": ["a.example:25"]})
        );
        let mx = Route {
            primary: vec![],
            route: Some("mx".into()),
        };
        assert_eq!(
            Value::Object(mx.keys(true)),
            json!({"route": "mx", "primary": null})
        );
        assert!(Route::default().keys(true).is_empty());
        let l = Limits {
            max_queue_messages: Some(5),
            lifetime: Some("2d".into()),
            ..Default::default()
        };
        assert_eq!(
            Value::Object(l.keys()),
            json!({"max_queue_messages": 5, "lifetime": "2d"})
        );
    }
}
