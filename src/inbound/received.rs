//! Trace headers: building the `Received:` line mx2 prepends (RFC 5321 §4.4) and counting the
//! ones already there (mail loops). Pure.

use crate::date::rfc5322_date;
use std::time::SystemTime;

/// What the Received header says about one transaction.
pub struct Trace<'a> {
    pub helo: &'a str,
    pub client_ip: std::net::IpAddr,
    pub hostname: &'a str,
    pub protocol: &'a str,
    pub queue_id: &'a str,
    /// `TLSv1_3 TLS13_AES_256_GCM_SHA384` when the session was encrypted.
    pub tls: Option<&'a str>,
    /// Named in a `for` clause when there is exactly one recipient.
    pub single_recipient: Option<&'a str>,
    pub time: SystemTime,
}

impl Trace<'_> {
    pub fn header(&self) -> String {
        let ip = match self.client_ip {
            std::net::IpAddr::V4(v4) => v4.to_string(),
            std::net::IpAddr::V6(v6) => format!("IPv6:{v6}"),
        };
        let helo: String = self
            .helo
            .chars()
            .map(|c| {
                if c.is_ascii_graphic() && c != '(' && c != ')' {
                    c
                } else {
                    '?'
                }
            })
            .collect();
        let mut h = format!("Received: from {helo} ([{ip}])");
        if let Some(tls) = self.tls {
            let (version, cipher) = tls.split_once(' ').unwrap_or((tls, ""));
            h.push_str(&format!("\r\n\t(using {version} with cipher {cipher})"));
        }
        h.push_str(&format!(
            "\r\n\tby {} (mx2) with {} id {}",
            self.hostname, self.protocol, self.queue_id
        ));
        if let Some(rcpt) = self.single_recipient {
            h.push_str(&format!("\r\n\tfor <{rcpt}>"));
        }
        h.push_str(&format!(";\r\n\t{}\r\n", rfc5322_date(self.time)));
        h
    }
}

/// Counts `Received:` fields in the header section (up to the first empty line).
pub fn count_received(content: &[u8]) -> usize {
    let mut n = 0;
    for line in content.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            break;
        }
        if line.len() >= 9 && line[..9].eq_ignore_ascii_case(b"received:") {
            n += 1;
        }
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    #[test]
    fn counts_only_header_section() {
        let msg = b"Received: a\r\nRECEIVED: b\r\nSubject: x\r\n\r\nReceived: body\r\n";
        assert_eq!(count_received(msg), 2);
    }

    #[test]
    fn header_shape() {
        let h = Trace {
            helo: "client (evil)",
            client_ip: "192.0.2.1".parse().unwrap(),
            hostname: "mx2.example.net",
            protocol: "ESMTP",
            queue_id: "abc",
            tls: None,
            single_recipient: Some("u@example.test"),
            time: UNIX_EPOCH,
        }
        .header();
        assert!(h.starts_with("Received: from client??evil? ([192.0.2.1])\r\n\tby mx2.example.net (mx2) with ESMTP id abc\r\n\tfor <u@example.test>;"));
        assert!(h.ends_with("+0000\r\n"));
    }
}
