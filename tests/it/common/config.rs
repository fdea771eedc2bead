//! The config builder: the TOML text of a test instance of mx2, with test defaults (no
//! greeting delay, short retries and timeouts, no outside DNS, its own admin port) that a
//! test's own tables replace. Pure text; never starts anything.

use super::free_port;
use std::path::Path;

/// Config text for a test instance; `smtp_extra` holds more `[smtp]` lines (limits, timeouts).
pub fn test_config(port: u16, primary_port: u16, state_dir: &Path, smtp_extra: &str) -> String {
    config_with(port, state_dir, smtp_extra, &example_domain(primary_port))
}

/// The `[[domain]]` table the tests back up: example.test, its primary on loopback.
pub fn example_domain(primary_port: u16) -> String {
    format!("[[domain]]\nname = \"example.test\"\nprimary = [\"127.0.0.1:{primary_port}\"]\n")
}

/// Config text with the given tail: extra tables ([dns], [routing]) and the [[domain]]s.
pub fn config_with(port: u16, state_dir: &Path, smtp_extra: &str, tail: &str) -> String {
    format!(
        r#"hostname = "mx2.test"
state_dir = "{state}"
[smtp]
listen = ["127.0.0.1:{port}"]
{size}
shutdown_grace = "5s"
{greeting}
{smtp_extra}
{queue}
{probe}
{delivery}
{dns}
{auth}
{admin}
{tail}
"#,
        state = state_dir.display(),
        size = if smtp_extra.contains("max_message_size") {
            ""
        } else {
            "max_message_size = \"1MB\""
        },
        // Tests talk at once; the early-talker wait is tested on its own.
        greeting = if smtp_extra.contains("greeting_delay") {
            ""
        } else {
            "greeting_delay = \"0s\"\nerror_delay = \"50ms\""
        },
        // A tail with its own [queue] table replaces these test defaults.
        queue = if tail.contains("[queue]") {
            ""
        } else {
            "[queue]\nretry_min = \"1s\"\nretry_max = \"4s\""
        },
        delivery = if tail.contains("[delivery]") {
            ""
        } else {
            "[delivery]\nconnect_timeout = \"2s\"\ngreeting_timeout = \"5s\"\ncommand_timeout = \"5s\"\ndata_timeout = \"10s\""
        },
        // Never the machine's own resolver: tests must not send DNS queries off this host.
        dns = if tail.contains("[dns]") || smtp_extra.contains("[dns]") {
            ""
        } else {
            "[dns]\nnameservers = [\"127.0.0.1:9\"]\ntimeout = \"500ms\""
        },
        // SPF/DKIM/DMARC only where a test serves the DNS records for it.
        auth = if tail.contains("[auth]") {
            ""
        } else {
            "[auth]\nenabled = false"
        },
        // Every instance gets its own admin port (the default, 8025, would be shared).
        admin = if tail.contains("[admin]") {
            String::new()
        } else {
            format!("[admin]\nlisten = \"127.0.0.1:{}\"", free_port())
        },
        probe = if tail.contains("[probe]") {
            ""
        } else {
            "[probe]\ninterval = \"1s\"\ntimeout = \"2s\""
        }
    )
}
