//! `mx2 queue list|show|export` read the store directly: after a SIGKILL, with the server
//! stopped, an operator still sees what is held.

use crate::common::*;

fn mx2_cmd(args: &[&str], config: &std::path::Path) -> (i32, Vec<u8>) {
    let (code, out, _) = mx2_command(args, config);
    (code, out)
}

#[test]
fn list_show_and_export_after_a_crash() {
    let port = free_port(); // the primary stays down
    let mut mx2 = Mx2::start(port);
    let mut c = mx2.client();
    c.cmd("EHLO client.test");
    let r = c.send_mail(
        "alice@sender.test",
        &["user@example.test", "other@example.test"],
        &message("held1", "first"),
    );
    let id = r.rsplit(' ').next().unwrap().to_string();
    assert!(
        c.send_mail("", &["user@example.test"], &message("held2", "second"))
            .starts_with("250")
    );
    std::thread::sleep(std::time::Duration::from_millis(1500));
    mx2.kill9();

    let (code, out) = mx2_cmd(&["queue", "list"], &mx2.config);
    let text = String::from_utf8_lossy(&out);
    assert_eq!(code, 0, "{text}");
    assert!(
        text.contains(&id) && text.contains("alice@sender.test") && text.contains("<>"),
        "{text}"
    );
    assert!(text.contains("2 message(s) waiting"), "{text}");

    let (_, out) = mx2_cmd(&["queue", "list", "--json"], &mx2.config);
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 2);

    let (code, out) = mx2_cmd(&["queue", "show", &id], &mx2.config);
    let text = String::from_utf8_lossy(&out);
    assert_eq!(code, 0, "{text}");
    assert!(
        text.contains("<user@example.test> pending")
            && text.contains("<other@example.test> pending"),
        "{text}"
    );
    assert!(
        text.contains("last reply:"),
        "the failed attempt is shown: {text}"
    );

    let (code, out) = mx2_cmd(&["queue", "export", &id], &mx2.config);
    assert_eq!(code, 0);
    assert!(out.starts_with(b"Received: from client.test"));
    assert!(out.ends_with(&message("held1", "first")));

    let (code, _) = mx2_cmd(&["queue", "show", "nosuchid"], &mx2.config);
    assert_eq!(code, 1);

    // Another instance now answers on the admin address this config names (a port clash):
    // its queue must not be shown as this one's.
    let other = Mx2::start(free_port());
    let text = std::fs::read_to_string(&mx2.config).unwrap();
    let ours = mx2.admin_url().trim_start_matches("http://").to_string();
    let theirs = other.admin_url().trim_start_matches("http://").to_string();
    std::fs::write(&mx2.config, text.replace(&ours, &theirs)).unwrap();
    let (code, out, err) = mx2_command(&["queue", "list", "--json"], &mx2.config);
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(
        v.as_array().unwrap().len(),
        2,
        "this instance's queue, read from its file"
    );
    assert!(
        String::from_utf8_lossy(&err).contains("belongs to another mx2"),
        "{}",
        String::from_utf8_lossy(&err)
    );
}

/// Issue 13, item 11: the server started with a relative config path, the command given the
/// absolute one from elsewhere: the command must know its own server (no "belongs to
/// another mx2", no falling back to the file), and flush must work.
#[test]
fn the_command_knows_its_server_however_the_config_path_is_spelt() {
    let dir = tempfile::tempdir().unwrap();
    let conf_dir = dir.path().join("conf");
    std::fs::create_dir(&conf_dir).unwrap();
    let port = free_port();
    let text = test_config(port, free_port(), std::path::Path::new("state"), "");
    let admin = text[text.find("[admin]").unwrap()..]
        .split('"')
        .nth(1)
        .unwrap()
        .to_string();
    std::fs::write(conf_dir.join("mx2.toml"), text).unwrap();
    let mut server = std::process::Command::new(mx2_binary())
        .args(["serve", "--config", "conf/mx2.toml"])
        .current_dir(dir.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let start = std::time::Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err()
        || std::net::TcpStream::connect(&admin).is_err()
    {
        assert!(start.elapsed().as_secs() < 20, "mx2 did not start");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let absolute = conf_dir.join("mx2.toml");
    let out = std::process::Command::new(mx2_binary())
        .args(["queue", "flush", "--config"])
        .arg(&absolute)
        .current_dir("/")
        .output()
        .unwrap();
    let said =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    let _ = server.kill();
    let _ = server.wait();
    assert!(out.status.success(), "{said}");
    assert!(!said.contains("belongs to another"), "{said}");
}

/// Issue 13, items 12 and 13: a listing cut by its limit says how many there are and how to
/// see them; a bulk action reports one true number of messages.
#[test]
fn listings_say_what_they_leave_out_and_actions_count_messages() {
    let mut mx2 = Mx2::start(free_port()); // the primary stays down
    let mut c = mx2.client();
    c.cmd("EHLO client.test");
    let mut ids = Vec::new();
    for n in 0..3 {
        let r = c.send_mail(
            "a@sender.test",
            &["one@example.test", "two@example.test"],
            &message(&format!("cut{n}"), "x"),
        );
        assert!(r.starts_with("250"), "{r}");
        ids.push(r.rsplit(' ').next().unwrap().to_string());
    }
    let config = mx2.config.clone();
    let run = |args: &[&str]| {
        let (code, out, err) = mx2_command(args, &config);
        let out = String::from_utf8_lossy(&out).into_owned();
        assert_eq!(code, 0, "{out}{}", String::from_utf8_lossy(&err));
        (out, String::from_utf8_lossy(&err).into_owned())
    };
    let (out, _) = run(&["queue", "list", "--limit", "2"]);
    assert!(
        out.contains("showing 2 of 3 message(s) waiting; see more with --limit 3"),
        "{out}"
    );
    let (_, err) = run(&["queue", "list", "--limit", "2", "--json"]);
    assert!(err.contains("showing 2 of 3"), "{err}");
    let (out, _) = run(&["queue", "list"]);
    assert!(
        out.contains("3 message(s) waiting") && !out.contains("showing"),
        "{out}"
    );

    // Two recipients each: counts are of messages, one number.
    let (out, _) = run(&["queue", "hold", &ids[0]]);
    assert!(out.trim_end().ends_with("held 1 message(s)"), "{out}");
    let (out, _) = run(&["queue", "release", "--all"]);
    assert!(
        out.contains("released 1 message(s); 2 of the 3 selected needed no change"),
        "{out}"
    );

    // The same from the file, with the server stopped.
    mx2.kill9();
    let (out, _) = run(&["queue", "list", "--limit", "1"]);
    assert!(out.contains("showing 1 of 3 message(s) waiting"), "{out}");
}
