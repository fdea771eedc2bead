//! `mx2 init`: the configuration it writes from flags runs (`mx2 serve` takes mail for the
//! domain and hands it to the primary); on a real terminal (tmux) it asks its questions and
//! writes the same file; it never overwrites a file without `--force`.

use crate::common::free_port;
use crate::common::primary::Primary;
use crate::common::runner::{Mx2, mx2_binary};
use crate::common::wait_until_showing;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// The test environment's only change to what init writes: DNS stays on this host.
const NO_OUTSIDE_DNS: &str = "\n[dns]\nnameservers = [\"127.0.0.1:9\"]\ntimeout = \"500ms\"\n";

fn init(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(mx2_binary())
        .arg("init")
        .args(args)
        .output()
        .expect("run mx2 init");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn init_with_flags_writes_a_config_that_serves_mail() {
    let primary = Primary::start(0);
    let mut written = String::new();
    let mut m = Mx2::prepare(|port, state| {
        let dir = state.parent().unwrap();
        let out = dir.join("init.toml");
        let (listen, domain) = (
            format!("127.0.0.1:{port}"),
            format!("example.test=127.0.0.1:{}", primary.port),
        );
        let admin = format!("127.0.0.1:{}", free_port());
        let (code, stdout, stderr) = init(&[
            "--hostname",
            "mx2.test",
            "--domain",
            &domain,
            "--listen",
            &listen,
            "--admin-token",
            "--admin-listen",
            &admin,
            "--state-dir",
            state.to_str().unwrap(),
            "--output",
            out.to_str().unwrap(),
        ]);
        assert_eq!(code, 0, "mx2 init failed: {stderr}");
        assert!(
            stdout.contains("example.test.  IN MX 20 mx2.test."),
            "{stdout}"
        );
        assert!(stdout.contains("mx2 check example.test"), "{stdout}");
        let token = std::fs::read_to_string(dir.join("admin-token")).unwrap();
        assert_eq!(token.trim().len(), 64, "a 32-byte hex token");
        written = std::fs::read_to_string(&out).unwrap();
        written.clone() + NO_OUTSIDE_DNS
    });
    m.spawn();
    let mut c = m.client();
    assert_eq!(c.code("EHLO client.test"), 250);
    c.send_ok(b"Subject: init\r\n\r\nhello\r\n");
    wait_until_showing(
        "delivery to the primary",
        Duration::from_secs(20),
        || primary.messages().len() == 1,
        || m.log(),
    );
    assert!(written.contains("token_file"), "{written}");

    // A second run refuses to overwrite; --force does.
    let out = m.dir.join("init.toml");
    let args = [
        "--hostname",
        "other.test",
        "--domain",
        "example.test=127.0.0.1",
        "--state-dir",
        "/tmp",
        "--output",
        out.to_str().unwrap(),
    ];
    let (code, _, stderr) = init(&args);
    assert_eq!(code, 2);
    assert!(stderr.contains("give --force to overwrite"), "{stderr}");
    assert_eq!(std::fs::read_to_string(&out).unwrap(), written);
    let (code, _, stderr) = init(&[&args[..], &["--force"]].concat());
    assert_eq!(code, 0, "{stderr}");
    assert!(
        std::fs::read_to_string(&out)
            .unwrap()
            .contains("other.test")
    );
}

#[test]
fn init_without_needed_flags_off_a_terminal_says_what_to_give() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("mx2.toml");
    let (code, _, stderr) = init(&["--hostname", "mx2.test", "--output", out.to_str().unwrap()]);
    assert_eq!(code, 2);
    assert!(stderr.contains("--domain NAME=PRIMARY"), "{stderr}");
    assert!(!out.exists());
}

/// A tmux server of the test's own (its own socket), killed when the test ends.
struct Tmux {
    socket: String,
}

impl Tmux {
    fn cmd(&self, args: &[&str]) -> String {
        let out = Command::new("tmux")
            .args(["-L", &self.socket])
            .args(args)
            .output()
            .expect("tmux is installed (apt-get install tmux; .ci/run does)");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn screen(&self) -> String {
        self.cmd(&["capture-pane", "-p", "-t", "init"])
    }

    /// Waits for `prompt` on the screen, then types `answer` and Enter.
    fn answer(&self, prompt: &str, answer: &str) {
        wait_until_showing(
            &format!("the question `{prompt}`"),
            Duration::from_secs(10),
            || self.screen().contains(prompt),
            || self.screen(),
        );
        if !answer.is_empty() {
            self.cmd(&["send-keys", "-t", "init", "-l", answer]);
        }
        self.cmd(&["send-keys", "-t", "init", "Enter"]);
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        self.cmd(&["kill-server"]);
    }
}

#[test]
fn init_on_a_terminal_asks_and_writes_the_same_file() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let common = |out: &Path| {
        vec![
            "--admin-listen".to_string(),
            "127.0.0.1:8999".into(),
            "--state-dir".into(),
            state.display().to_string(),
            "--output".into(),
            out.display().to_string(),
        ]
    };
    let by_flags = dir.path().join("flags").join("mx2.toml");
    let mut args: Vec<String> = [
        "--hostname",
        "mx2.test",
        "--domain",
        "example.test=mail.example.test",
        "--domain",
        "example.org=[2001:db8::1]:2525",
        "--listen",
        "127.0.0.1:2525",
        "--admin-token",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(common(&by_flags));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (code, _, stderr) = init(&args);
    assert_eq!(code, 0, "{stderr}");

    let asked = dir.path().join("asked").join("mx2.toml");
    let mut line = vec![mx2_binary().to_string(), "init".into()];
    line.extend(common(&asked));
    // The shell keeps the pane open after init exits, so its last words stay readable.
    let shell = format!("{}; echo init-exited-$?; sleep 60", line.join(" "));
    let tmux = Tmux {
        socket: format!("mx2-init-{}", std::process::id()),
    };
    tmux.cmd(&[
        "new-session",
        "-d",
        "-s",
        "init",
        "-x",
        "200",
        "-y",
        "50",
        "sh",
        "-c",
        &shell,
    ]);
    tmux.answer("This server's host name", "mx2.test");
    tmux.answer("A domain to back up", "example.test=mail.example.test");
    tmux.answer("Another domain", "example.org=[2001:db8::1]:2525");
    tmux.answer("Another domain", "");
    tmux.answer("Addresses to accept SMTP on", "127.0.0.1:2525");
    tmux.answer("Require a token for the admin API", "y");
    tmux.answer("Standby mode", "n");
    wait_until_showing(
        "mx2 init to finish",
        Duration::from_secs(10),
        || tmux.screen().contains("init-exited-"),
        || tmux.screen(),
    );
    let screen = tmux.screen();
    assert!(screen.contains("init-exited-0"), "{screen}");
    assert!(screen.contains("mx2 check example.org"), "{screen}");
    assert_eq!(
        std::fs::read_to_string(&asked).unwrap(),
        std::fs::read_to_string(&by_flags).unwrap()
    );
}
