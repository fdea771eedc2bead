//! Trace headers: building the `Received:` line mx2 prepends (RFC 5321 §4.4) and counting the
//! ones already there (mail loops). Pure.

use std::time::{SystemTime, UNIX_EPOCH};

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

/// `Sat, 28 Nov 2026 01:24:44 +0000`
pub fn rfc5322_date(t: SystemTime) -> String {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0) as i64;
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    const WEEKDAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    format!(
        "{}, {:02} {} {} {:02}:{:02}:{:02} +0000",
        WEEKDAYS[days.rem_euclid(7) as usize],
        d,
        MONTHS[(m - 1) as usize],
        y,
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 → (year, month 1–12, day 1–31), proleptic Gregorian.
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn dates() {
        assert_eq!(rfc5322_date(UNIX_EPOCH), "Thu, 01 Jan 1970 00:00:00 +0000");
        let t = UNIX_EPOCH + Duration::from_secs(1_795_829_084);
        assert_eq!(rfc5322_date(t), "Sat, 28 Nov 2026 01:24:44 +0000");
        let t = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(rfc5322_date(t), "Tue, 29 Feb 2000 00:00:00 +0000");
    }

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
