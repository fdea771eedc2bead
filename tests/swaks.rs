//! A real SMTP client from Debian (swaks) sends through a running mx2 to the test primary.
//! `.ci/run` installs swaks; without it this test fails, it is not skipped.

mod common;

use common::*;
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
