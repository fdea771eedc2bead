//! The shipped example configurations stay valid: `mx2 config check` accepts each one.

#[test]
fn every_example_config_passes_config_check() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            let out = std::process::Command::new(env!("CARGO_BIN_EXE_mx2"))
                .args(["config", "check", "--config"])
                .arg(&path)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}: {}",
                path.display(),
                String::from_utf8_lossy(&out.stderr)
            );
            checked += 1;
        }
    }
    assert!(
        checked >= 3,
        "expected the quickstart, single-node and hosting-provider examples"
    );
}

/// Issue 13, item 17: the README's command for a test primary works as root (Postfix's
/// smtp-sink refuses root without `-u`) and as any other user.
#[test]
fn the_readme_test_primary_command_works_for_root_and_others() {
    let readme =
        std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"))
            .unwrap();
    let command = readme
        .lines()
        .find(|l| l.starts_with("/usr/sbin/smtp-sink"))
        .expect("the README gives a smtp-sink command line");
    assert!(
        std::path::Path::new("/usr/sbin/smtp-sink").exists(),
        "smtp-sink is not installed: apt-get install postfix (the CI script does)"
    );
    let root = std::process::Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap();
    let mut runs = vec![("this user", vec![])];
    if root {
        // setpriv execs (no child of its own), so killing it ends smtp-sink.
        runs.push((
            "nobody",
            vec![
                "setpriv",
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
            ],
        ));
    }
    for (who, prefix) in runs {
        let port = super::common::free_port();
        let line = format!(
            "exec {}",
            command.replace("127.0.0.1:2526", &format!("127.0.0.1:{port}"))
        );
        let mut argv: Vec<&str> = prefix.clone();
        argv.extend(["sh", "-c", &line]);
        let mut child = std::process::Command::new(argv[0])
            .args(&argv[1..])
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let start = std::time::Instant::now();
        let greeting = loop {
            if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) {
                use std::io::Read;
                s.set_read_timeout(Some(std::time::Duration::from_secs(5)))
                    .unwrap();
                let mut buf = [0u8; 256];
                let n = s.read(&mut buf).unwrap_or(0);
                break String::from_utf8_lossy(&buf[..n]).into_owned();
            }
            if let Ok(Some(status)) = child.try_wait() {
                let mut err = String::new();
                use std::io::Read;
                let _ = child.stderr.take().unwrap().read_to_string(&mut err);
                panic!("as {who}: `{line}` exited ({status}): {err}");
            }
            assert!(
                start.elapsed() < std::time::Duration::from_secs(10),
                "as {who}: nothing listens on {port}"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        };
        let _ = child.kill();
        let _ = child.wait();
        assert!(greeting.starts_with("220"), "as {who}: {greeting}");
        println!("as {who}: {}", greeting.trim_end());
    }
}
