//! Every default of the configuration file, as a named constant: one module per `[section]`,
//! one constant per key left out. The section files use these and nothing else for a missing
//! key; the test at the bottom checks the README's configuration reference against them.
//! Constants only: no parsing, no I/O (the test reads the README at compile time).

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::Duration;

const fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

const DAY: u64 = 86_400;

/// Top-level keys.
pub mod top {
    /// `state_dir`: where the queue lives.
    pub const STATE_DIR: &str = "/var/lib/mx2";
    /// The host name used when `hostname` is not set and the system's cannot be read.
    pub const FALLBACK_HOSTNAME: &str = "localhost";
}

/// `[log]`.
pub mod log {
    pub const LEVEL: &str = "info";
}

/// `[smtp]`.
pub mod smtp {
    use super::*;
    pub const LISTEN: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 25));
    pub const MAX_MESSAGE_SIZE: u64 = 50_000_000;
    pub const MAX_RECIPIENTS: usize = 100;
    pub const MAX_CONNECTIONS: usize = 1000;
    pub const MAX_CONNECTIONS_PER_IP: usize = 20;
    pub const MAX_LINE_LENGTH: usize = 4096;
    pub const COMMAND_TIMEOUT: Duration = secs(300);
    pub const DATA_TIMEOUT: Duration = secs(180);
    pub const MIN_DATA_RATE: u64 = 500;
    pub const STRESS_THRESHOLD: f64 = 0.8;
    pub const STRESS_TIMEOUT: Duration = secs(10);
    pub const IPV6_PREFIX_LENGTH: u8 = 64;
    pub const SHUTDOWN_GRACE: Duration = secs(30);
    pub const GREETING_DELAY: Duration = secs(1);
    pub const MAX_ERRORS: usize = 20;
    pub const ERROR_DELAY: Duration = secs(1);
    pub const MESSAGES_PER_MINUTE_PER_IP: u32 = 600;
    pub const RECIPIENTS_PER_MINUTE_PER_IP: u32 = 3000;
}

/// `[recipients]`.
pub mod recipients {
    use super::*;
    pub const POSITIVE_TTL: Duration = secs(30 * DAY);
    pub const NEGATIVE_TTL: Duration = secs(3600);
    pub const CALLOUT_TIMEOUT: Duration = secs(10);
    pub const RELOAD_INTERVAL: Duration = secs(600);
    pub const STANDBY_CHECK_INTERVAL: Duration = secs(10);
}

/// `[queue]` (`delay_warning` is off by default).
pub mod queue {
    use super::*;
    pub const RETRY_MIN: Duration = secs(60);
    pub const RETRY_MAX: Duration = secs(3600);
    pub const LIFETIME: Duration = secs(30 * DAY);
    /// `min_free_disk`: this share of the file system, or at least `MIN_FREE_DISK_BYTES`.
    pub const MIN_FREE_DISK_PERCENT: u64 = 5;
    pub const MIN_FREE_DISK_BYTES: u64 = 1 << 30;
}

/// `[probe]`.
pub mod probe {
    use super::*;
    pub const INTERVAL: Duration = secs(1);
    pub const TIMEOUT: Duration = secs(10);
}

/// `[delivery]` (`max_messages_per_second` is off by default).
pub mod delivery {
    use super::*;
    pub const MAX_CONNECTIONS_PER_PRIMARY: usize = 20;
    pub const INITIAL_CONNECTIONS_PER_PRIMARY: usize = 2;
    pub const MESSAGES_PER_CONNECTION: usize = 100;
    pub const CONNECT_TIMEOUT: Duration = secs(30);
    pub const GREETING_TIMEOUT: Duration = secs(300);
    pub const COMMAND_TIMEOUT: Duration = secs(300);
    pub const DATA_TIMEOUT: Duration = secs(600);
}

/// `[tls_reports]` (`organization`: the hostname).
pub mod tls_reports {
    pub const ENABLED: bool = false;
    /// `contact` and `from` are this local part at the hostname.
    pub const LOCAL_PART: &str = "postmaster";
}

/// `[dns]` (`nameservers`: the system's resolv.conf).
pub mod dns {
    use super::*;
    pub const TIMEOUT: Duration = secs(5);
    /// The port of a name server given as a bare IP address.
    pub const NAMESERVER_PORT: u16 = 53;
}

/// `[routing]`.
pub mod routing {
    pub const MX_PORT: u16 = 25;
}

/// `[[domain]]`.
pub mod domain {
    /// The port of a primary given without one.
    pub const PRIMARY_PORT: u16 = 25;
    pub const SUBADDRESS_SEPARATOR: char = '+';
    pub const STANDBY: bool = false;
    pub const INBOX: bool = false;
}

/// `drill` and `drill_rcpt` in `[[domain]]`.
pub mod drill {
    use super::*;
    /// The canary's local part: `mx2-drill@DOMAIN`.
    pub const RCPT_LOCAL: &str = "mx2-drill";
    /// The shortest interval between scheduled drills.
    pub const MIN_EVERY: Duration = secs(1);
}

/// `[auth]`.
pub mod auth {
    pub const ENABLED: bool = true;
    pub const DMARC_REJECT: bool = false;
}

/// `[admin]`.
pub mod admin {
    use super::*;
    pub const LISTEN: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 8025));
}

/// `[inbox]`.
pub mod inbox {
    use super::*;
    pub const MAX_LOGIN_FAILURES: u32 = 5;
    pub const LOCKOUT: Duration = secs(60);
    pub const MAX_CONNECTIONS: usize = 200;
    pub const CONTENT_MEMORY: u64 = 256 << 20;
    pub const MIN_CONTENT_MEMORY: u64 = 1_000_000;
    pub const IDLE_TIMEOUT: Duration = secs(1800);
    pub const CODE_VALIDITY: Duration = secs(900);
    pub const KEEP_AFTER_DELIVERY: Duration = secs(3 * 86_400);
    /// The most `keep_after_delivery` may be.
    pub const MAX_KEEP_AFTER_DELIVERY: Duration = secs(90 * 86_400);
}

/// `[alerts]`.
pub mod alerts {
    use super::*;
    pub const DOWN_AFTER: Duration = secs(300);
}

/// `[storage]` with `backend = "postgres"` (`node`: the hostname).
pub mod storage {
    use super::*;
    pub const POOL_SIZE: usize = 16;
    pub const LEASE: Duration = secs(300);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{parse_duration, parse_size};

    const README: &str = include_str!("../../README.md");

    /// The default column of the README's row for `key` (as the table writes it, e.g.
    /// `[smtp] listen`), without backticks and quotes.
    fn readme(key: &str) -> String {
        let start = format!("| `{key}` |");
        let row = README
            .lines()
            .find(|l| l.starts_with(&start))
            .unwrap_or_else(|| panic!("the README has no row for `{key}`"));
        row[start.len()..]
            .split('|')
            .next()
            .unwrap()
            .trim()
            .replace(['`', '"'], "")
    }

    fn duration(key: &str) -> Duration {
        let text = readme(key);
        parse_duration(&text).unwrap_or_else(|e| panic!("{key}: {e}"))
    }

    fn number<T: std::str::FromStr>(key: &str) -> T {
        let text = readme(key);
        text.parse()
            .unwrap_or_else(|_| panic!("{key}: `{text}` is not a number"))
    }

    #[test]
    fn the_readme_states_these_defaults() {
        assert_eq!(readme("state_dir"), top::STATE_DIR);
        assert_eq!(readme("[log] level"), log::LEVEL);

        assert_eq!(readme("[smtp] listen"), format!("[{}]", smtp::LISTEN));
        let size = readme("[smtp] max_message_size");
        assert_eq!(parse_size(&size), Ok(smtp::MAX_MESSAGE_SIZE));
        assert_eq!(
            number::<usize>("[smtp] max_recipients"),
            smtp::MAX_RECIPIENTS
        );
        assert_eq!(
            number::<usize>("[smtp] max_connections"),
            smtp::MAX_CONNECTIONS
        );
        let per_ip = number::<usize>("[smtp] max_connections_per_ip");
        assert_eq!(per_ip, smtp::MAX_CONNECTIONS_PER_IP);
        assert_eq!(
            number::<usize>("[smtp] max_line_length"),
            smtp::MAX_LINE_LENGTH
        );
        assert_eq!(duration("[smtp] command_timeout"), smtp::COMMAND_TIMEOUT);
        assert_eq!(duration("[smtp] data_timeout"), smtp::DATA_TIMEOUT);
        assert_eq!(number::<u64>("[smtp] min_data_rate"), smtp::MIN_DATA_RATE);
        assert_eq!(
            number::<f64>("[smtp] stress_threshold"),
            smtp::STRESS_THRESHOLD
        );
        assert_eq!(duration("[smtp] stress_timeout"), smtp::STRESS_TIMEOUT);
        let prefix = number::<u8>("[smtp] ipv6_prefix_length");
        assert_eq!(prefix, smtp::IPV6_PREFIX_LENGTH);
        assert_eq!(duration("[smtp] shutdown_grace"), smtp::SHUTDOWN_GRACE);
        assert_eq!(duration("[smtp] greeting_delay"), smtp::GREETING_DELAY);
        assert_eq!(number::<usize>("[smtp] max_errors"), smtp::MAX_ERRORS);
        assert_eq!(duration("[smtp] error_delay"), smtp::ERROR_DELAY);
        let messages = number::<u32>("[smtp] messages_per_minute_per_ip");
        assert_eq!(messages, smtp::MESSAGES_PER_MINUTE_PER_IP);
        let recipients = number::<u32>("[smtp] recipients_per_minute_per_ip");
        assert_eq!(recipients, smtp::RECIPIENTS_PER_MINUTE_PER_IP);

        assert_eq!(duration("[queue] retry_min"), queue::RETRY_MIN);
        assert_eq!(duration("[queue] retry_max"), queue::RETRY_MAX);
        assert_eq!(duration("[queue] lifetime"), queue::LIFETIME);
        assert_eq!(readme("[queue] delay_warning"), "off");
        assert_eq!(duration("[probe] interval"), probe::INTERVAL);
        assert_eq!(duration("[probe] timeout"), probe::TIMEOUT);

        let d = delivery::INITIAL_CONNECTIONS_PER_PRIMARY;
        assert_eq!(
            number::<usize>("[delivery] initial_connections_per_primary"),
            d
        );
        let d = delivery::MAX_CONNECTIONS_PER_PRIMARY;
        assert_eq!(number::<usize>("[delivery] max_connections_per_primary"), d);
        assert_eq!(readme("[delivery] max_messages_per_second"), "off");
        let d = delivery::MESSAGES_PER_CONNECTION;
        assert_eq!(number::<usize>("[delivery] messages_per_connection"), d);
        assert_eq!(
            duration("[delivery] connect_timeout"),
            delivery::CONNECT_TIMEOUT
        );
        assert_eq!(
            duration("[delivery] greeting_timeout"),
            delivery::GREETING_TIMEOUT
        );
        assert_eq!(
            duration("[delivery] command_timeout"),
            delivery::COMMAND_TIMEOUT
        );
        assert_eq!(duration("[delivery] data_timeout"), delivery::DATA_TIMEOUT);

        assert_eq!(duration("[dns] timeout"), dns::TIMEOUT);
        assert_eq!(
            number::<bool>("[tls_reports] enabled"),
            tls_reports::ENABLED
        );
        assert_eq!(
            readme("[tls_reports] from"),
            format!("{}@HOSTNAME", tls_reports::LOCAL_PART)
        );
        assert_eq!(number::<u16>("[routing] mx_port"), routing::MX_PORT);

        let separator = domain::SUBADDRESS_SEPARATOR.to_string();
        assert_eq!(readme("[[domain]] subaddress_separator"), separator);
        assert_eq!(number::<bool>("[[domain]] standby"), domain::STANDBY);
        assert!(README.contains("port defaults to 25") && domain::PRIMARY_PORT == 25);
        assert_eq!(readme("[[domain]] drill"), "off");
        assert_eq!(
            readme("[[domain]] drill_rcpt"),
            format!("{}@DOMAIN", drill::RCPT_LOCAL)
        );
        assert!(README.contains(&format!("(at least `{}s`)", drill::MIN_EVERY.as_secs())));

        assert_eq!(number::<bool>("[auth] enabled"), auth::ENABLED);
        assert_eq!(number::<bool>("[auth] dmarc_reject"), auth::DMARC_REJECT);

        let r = recipients::POSITIVE_TTL;
        assert_eq!(duration("[recipients] positive_ttl"), r);
        assert_eq!(
            duration("[recipients] negative_ttl"),
            recipients::NEGATIVE_TTL
        );
        let r = recipients::CALLOUT_TIMEOUT;
        assert_eq!(duration("[recipients] callout_timeout"), r);
        let r = recipients::RELOAD_INTERVAL;
        assert_eq!(duration("[recipients] reload_interval"), r);
        let r = recipients::STANDBY_CHECK_INTERVAL;
        assert_eq!(duration("[recipients] standby_check_interval"), r);

        assert_eq!(readme("[admin] listen"), admin::LISTEN.to_string());
        assert_eq!(duration("[alerts] down_after"), alerts::DOWN_AFTER);
        assert_eq!(number::<usize>("[storage] pool_size"), storage::POOL_SIZE);
        assert_eq!(duration("[storage] lease"), storage::LEASE);
        assert_eq!(readme("[inbox] listen"), "off");
        assert_eq!(readme("[inbox] tls_listen"), "off");
        let n = number::<u32>("[inbox] max_login_failures");
        assert_eq!(n, inbox::MAX_LOGIN_FAILURES);
        assert_eq!(duration("[inbox] lockout"), inbox::LOCKOUT);
        let n = number::<usize>("[inbox] max_connections");
        assert_eq!(n, inbox::MAX_CONNECTIONS);
        let size = readme("[inbox] content_memory");
        assert_eq!(parse_size(&size), Ok(inbox::CONTENT_MEMORY));
        assert_eq!(duration("[inbox] idle_timeout"), inbox::IDLE_TIMEOUT);
        assert_eq!(duration("[inbox] code_validity"), inbox::CODE_VALIDITY);
        assert_eq!(
            duration("[inbox] keep_after_delivery"),
            inbox::KEEP_AFTER_DELIVERY
        );
        assert_eq!(number::<bool>("[[domain]] inbox"), domain::INBOX);
        assert_eq!(readme("[[domain]] inbox_delete"), "keep_delivering");
    }
}
