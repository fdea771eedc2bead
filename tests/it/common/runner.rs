//! The mx2 runner: the real `mx2` binary (`CARGO_BIN_EXE_mx2`) started on a config from
//! `config`, in a temporary directory of its own, waited for until it accepts, and killed
//! (SIGKILL or SIGTERM) by the test; plus one-shot `mx2 COMMAND --config` runs. The directory
//! is removed when the test passes and kept (its path printed) when it fails.

use super::client::Client;
use super::config::{config_with, test_config};
use super::free_port;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// The operator's admin token of instances started with [`Mx2::start_with_token`].
pub const ADMIN_TOKEN: &str = "t0ken-for-tests-0123456789abcdef";

/// A running mx2 binary with its own config and state directory.
pub struct Mx2 {
    pub port: u16,
    pub dir: PathBuf,
    child: Option<Child>,
    pub config: PathBuf,
    /// A command mx2 runs under (e.g. `prlimit --nofile=64:4096`), empty for none.
    pub wrapper: Vec<String>,
}

pub fn mx2_binary() -> &'static str {
    env!("CARGO_BIN_EXE_mx2")
}

impl Mx2 {
    /// Starts mx2 backing up example.test to a primary on `primary_port`.
    pub fn start(primary_port: u16) -> Mx2 {
        Self::start_with(primary_port, "")
    }

    pub fn start_with(primary_port: u16, smtp_extra: &str) -> Mx2 {
        Self::start_config(|port, state| test_config(port, primary_port, state, smtp_extra))
    }

    /// Starts mx2 on the test defaults followed by `tail` (tables and [[domain]]s).
    pub fn start_tail(tail: &str) -> Mx2 {
        Self::start_config(|port, state| config_with(port, state, "", tail))
    }

    /// Starts mx2 on the test defaults, its admin port needing [`ADMIN_TOKEN`], followed by
    /// `tail` (more tables and the [[domain]]s).
    pub fn start_with_token(tail: &str) -> Mx2 {
        Self::start_config(|port, state| {
            let dir = state.parent().unwrap();
            std::fs::write(dir.join("admin.token"), format!("{ADMIN_TOKEN}\n")).unwrap();
            let tail = format!(
                "[admin]\nlisten = \"127.0.0.1:{}\"\ntoken_file = \"admin.token\"\n{tail}",
                free_port()
            );
            config_with(port, state, "", &tail)
        })
    }

    /// Starts mx2 on a config made from its port and state directory.
    pub fn start_config(make: impl FnOnce(u16, &Path) -> String) -> Mx2 {
        let mut m = Self::prepare(make);
        m.spawn();
        m
    }

    /// An instance with its config written, not started yet (`spawn` starts it).
    pub fn prepare(make: impl FnOnce(u16, &Path) -> String) -> Mx2 {
        let dir = tempfile::tempdir().unwrap().keep();
        let port = free_port();
        let config = dir.join("mx2.toml");
        std::fs::write(&config, make(port, &dir.join("state"))).unwrap();
        Mx2 {
            port,
            dir,
            child: None,
            config,
            wrapper: Vec::new(),
        }
    }

    /// Starts (again) the binary on this instance's config and waits until it accepts.
    pub fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("mx2.log"))
            .unwrap();
        let mut command = match self.wrapper.split_first() {
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg(mx2_binary());
                c
            }
            None => Command::new(mx2_binary()),
        };
        let child = command
            .args(["serve", "--config"])
            .arg(&self.config)
            .env("MX2_LOG", "mx2=debug,info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start mx2");
        self.child = Some(child);
        let start = Instant::now();
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!("mx2 exited at start ({status}); log:\n{}", self.log());
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "mx2 did not start listening; log:\n{}",
                self.log()
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("mx2.log")).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).unwrap_or(0)
    }

    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait; returns the exit code and how long the exit took.
    pub fn terminate(&mut self) -> (Option<i32>, Duration) {
        let c = self.child.as_mut().expect("running");
        let start = Instant::now();
        let _ = Command::new("kill")
            .args(["-TERM", &c.id().to_string()])
            .status();
        let status = c.wait().unwrap();
        self.child = None;
        (status.code(), start.elapsed())
    }

    pub fn client(&self) -> Client {
        Client::connect(self.port)
    }

    /// The admin API's base URL, from the instance's config.
    pub fn admin_url(&self) -> String {
        let text = std::fs::read_to_string(&self.config).unwrap();
        let after = &text[text.find("[admin]").expect("config has [admin]")..];
        let line = after
            .lines()
            .find(|l| l.trim_start().starts_with("listen"))
            .expect("admin.listen");
        let addr = line.split('"').nth(1).unwrap();
        format!("http://{addr}")
    }
}

/// Runs `mx2 ARGS --config CONFIG`: (exit code, stdout, stderr) as text.
pub fn mx2_text(args: &[&str], config: &Path) -> (i32, String, String) {
    let (code, out, err) = mx2_command(args, config);
    (
        code,
        String::from_utf8_lossy(&out).into_owned(),
        String::from_utf8_lossy(&err).into_owned(),
    )
}

/// Runs `mx2 ARGS --config CONFIG`: (exit code, stdout, stderr).
pub fn mx2_command(args: &[&str], config: &Path) -> (i32, Vec<u8>, Vec<u8>) {
    let out = Command::new(mx2_binary())
        .args(args)
        .arg("--config")
        .arg(config)
        .output()
        .unwrap();
    (out.status.code().unwrap_or(-1), out.stdout, out.stderr)
}

impl Drop for Mx2 {
    fn drop(&mut self) {
        self.kill9();
        if !thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        } else {
            eprintln!("mx2 test directory kept: {}", self.dir.display());
        }
    }
}
