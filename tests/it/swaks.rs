//! A real SMTP client from Debian (swaks) sends through a running mx2 to the test primary.
//! `.ci/run` installs swaks; without it this test fails, it is not skipped.

use crate::common::{self, *};
use std::process::Command;
use std::time::Duration;

#[test]
fn swaks_sends_through_mx2() {
    let primary = Primary::start(0);
    let mx2 = Mx2::start(primary.port);
    let out = Command::new("swaks")
        .args(["--server", "127.0.0.1", "--port", &mx2.port.to_string()])
        .args([
            "--from",
            "swaks@sender.test",
            "--to",
            "user@example.test",
            "--helo",
            "swaks.test",
        ])
        .args([
            "--header",
            "Subject: sent by swaks",
            "--body",
            "Hello from swaks.\n.leading dot\n",
            "--pipeline",
        ])
        .output()
        .expect("swaks is not installed: apt-get install swaks (the CI script does)");
    let transcript = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "swaks failed:\n{transcript}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(transcript.contains("250 2.0.0 queued as"), "{transcript}");
    let got = primary.wait_for(1, Duration::from_secs(10));
    assert_eq!(got.len(), 1, "log:\n{}", mx2.log());
    assert_eq!(got[0].mail_from, "swaks@sender.test");
    assert_eq!(got[0].header("Subject").as_deref(), Some("sent by swaks"));
    let body = String::from_utf8_lossy(&got[0].body);
    assert!(
        body.contains("\r\n\r\nHello from swaks.\r\n.leading dot\r\n"),
        "{body}"
    );
}

#[test]
fn swaks_sends_over_starttls() {
    let pki = common::pki::Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let leaf = pki.leaf(dir.path(), "mx2", &["mx2.test"]);
    let primary = Primary::start(0);
    let tail = format!(
        "[tls]\ncert = \"{}\"\nkey = \"{}\"\n[[domain]]\nname = \"example.test\"\nprimary = [\"127.0.0.1:{}\"]\n",
        leaf.cert.display(),
        leaf.key.display(),
        primary.port
    );
    let mx2 = Mx2::start_tail(&tail);
    let out = Command::new("swaks")
        .args([
            "--server",
            "127.0.0.1",
            "--port",
            &mx2.port.to_string(),
            "--tls",
        ])
        .args([
            "--from",
            "swaks@sender.test",
            "--to",
            "user@example.test",
            "--helo",
            "swaks.test",
        ])
        .output()
        .expect(
            "swaks is not installed: apt-get install swaks libnet-ssleay-perl (the CI script does)",
        );
    let transcript = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "swaks --tls failed:\n{transcript}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(transcript.contains("TLS started"), "{transcript}");
    let got = primary.wait_for(1, Duration::from_secs(10));
    assert_eq!(got.len(), 1, "log:\n{}", mx2.log());
    assert!(String::from_utf8_lossy(&got[0].body).contains("with ESMTPS"));
}
