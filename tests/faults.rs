//! Faults on purpose: the disk fills up, the primary hangs or drops the connection after the
//! final dot, SIGTERM arrives under load. Nothing acknowledged may be lost.

mod common;

use common::*;
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[test]
fn a_full_disk_gets_452_then_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    std::fs::create_dir_all(&state).unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=3m", "tmpfs"])
        .arg(&state)
        .status()
        .unwrap();
    assert!(
        mounted.success(),
        "this test mounts a small tmpfs (needs root, as CI has)"
    );
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(&self.0)
                .status();
        }
    }
    let _unmount = Unmount(state.clone());
    let port = free_port();
    let st = state.clone();
    let mut mx2 = Mx2::start_config(move |p, _| test_config(p, port, &st, ""));
    let mut c = mx2.client();
    c.cmd("EHLO client.test");
    let big = "x".repeat(900);
    let body = (0..200)
        .map(|_| big.as_str())
        .collect::<Vec<_>>()
        .join("\r\n");
    let mut acked = Vec::new();
    let mut full_reply = None;
    for i in 0..40 {
        let id = format!("fill{i}");
        let r = c.send_mail(
            "a@sender.test",
            &["user@example.test"],
            &message(&id, &body),
        );
        if r.starts_with("250") {
            acked.push(id);
        } else {
            full_reply = Some(r);
            break;
        }
    }
    let r = full_reply.expect("the 3 MB disk never filled");
    println!("disk full after {} messages: {r}", acked.len());
    assert!(r.starts_with("452 4.3.1"), "{r}");
    assert_eq!(c.code("NOOP"), 250, "the session and the server survive");
    // Space comes back: mail is accepted again, and everything acknowledged is delivered.
    assert!(
        std::process::Command::new("mount")
            .args(["-o", "remount,size=64m"])
            .arg(&state)
            .status()
            .unwrap()
            .success()
    );
    let r = c.send_mail(
        "a@sender.test",
        &["user@example.test"],
        &message("after", "small"),
    );
    assert!(r.starts_with("250"), "{r}");
    acked.push("after".into());
    let primary = Primary::start(port);
    let got = primary.wait_for(acked.len(), Duration::from_secs(30));
    let ids: HashSet<String> = got
        .iter()
        .filter_map(|m| m.header("Message-ID"))
        .map(|h| {
            h.trim_matches(|c| c == '<' || c == '>')
                .trim_end_matches("@test")
                .to_string()
        })
        .collect();
    for id in &acked {
        assert!(
            ids.contains(id),
            "acknowledged {id} lost; log:\n{}",
            mx2.log()
        );
    }
    mx2.kill9();
}

#[test]
fn a_primary_that_never_answers_times_out_and_nothing_sticks() {
    let port = free_port();
    let silent = Primary::start_with(
        port,
        PrimaryOptions {
            silent: true,
            ..Default::default()
        },
    );
    let tail = format!(
        "[delivery]\nconnect_timeout = \"1s\"\ngreeting_timeout = \"1s\"\ncommand_timeout = \"2s\"\ndata_timeout = \"2s\"\n[[domain]]\nname = \"example.test\"\nprimary = [\"127.0.0.1:{port}\"]\n"
    );
    let mx2 = Mx2::start_config(|p, state| config_with(p, state, "", &tail));
    let mut c = mx2.client();
    c.cmd("EHLO client.test");
    assert!(
        c.send_mail(
            "a@sender.test",
            &["user@example.test"],
            &message("hang", "x")
        )
        .starts_with("250")
    );
    let start = Instant::now();
    while !mx2.log().contains("timed out waiting for the greeting")
        && start.elapsed() < Duration::from_secs(10)
    {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        mx2.log().contains("timed out waiting for the greeting"),
        "log:\n{}",
        mx2.log()
    );
    drop(silent);
    let primary = Primary::start(port);
    let got = primary.wait_for(1, Duration::from_secs(15));
    assert_eq!(got.len(), 1, "the worker stayed stuck; log:\n{}", mx2.log());
}

#[test]
fn a_drop_after_the_final_dot_means_a_counted_duplicate_not_a_loss() {
    let primary = Primary::start_with(
        0,
        PrimaryOptions {
            drop_after_dot: 1,
            ..Default::default()
        },
    );
    let mx2 = Mx2::start(primary.port);
    let mut c = mx2.client();
    c.cmd("EHLO client.test");
    assert!(
        c.send_mail(
            "a@sender.test",
            &["user@example.test"],
            &message("dup", "x")
        )
        .starts_with("250")
    );
    let got = primary.wait_for(2, Duration::from_secs(15));
    let copies = got
        .iter()
        .filter(|m| m.header("Message-ID").as_deref() == Some("<dup@test>"))
        .count();
    println!(
        "primary dropped the connection after the final dot: {copies} copies delivered, {} duplicate",
        copies.saturating_sub(1)
    );
    assert_eq!(copies, 2, "log:\n{}", mx2.log());
    assert!(
        mx2.log().contains("RFC 1047"),
        "the duplicate risk is logged"
    );
}

#[test]
fn sigterm_under_load_loses_nothing_and_exits_in_time() {
    let port = free_port();
    let mut mx2 = Mx2::start(port);
    let acked: Arc<Mutex<Vec<String>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::new();
    for t in 0..4 {
        let (acked, stop, p) = (acked.clone(), stop.clone(), mx2.port);
        clients.push(std::thread::spawn(move || {
            let Ok(_) = std::net::TcpStream::connect(("127.0.0.1", p)) else {
                return;
            };
            let mut c = Client::connect(p);
            c.cmd("EHLO load.test");
            for n in 0.. {
                if stop.load(Ordering::SeqCst) {
                    return;
                }
                let id = format!("t{t}-{n}");
                if !c
                    .send_mail(
                        "a@sender.test",
                        &["user@example.test"],
                        &message(&id, "load"),
                    )
                    .starts_with("250")
                {
                    return;
                }
                acked.lock().unwrap().push(id);
            }
        }));
    }
    std::thread::sleep(Duration::from_millis(700));
    let (code, took) = mx2.terminate();
    stop.store(true, Ordering::SeqCst);
    for c in clients {
        let _ = c.join();
    }
    println!(
        "SIGTERM under load: exit {code:?} after {took:?}, {} messages acknowledged",
        acked.lock().unwrap().len()
    );
    assert_eq!(code, Some(0));
    assert!(took < Duration::from_secs(6), "grace period is 5 s");
    let primary = Primary::start(port);
    mx2.spawn();
    let acked = acked.lock().unwrap().clone();
    assert!(!acked.is_empty());
    let got = primary.wait_for(acked.len(), Duration::from_secs(30));
    let ids: HashSet<String> = got.iter().filter_map(|m| m.header("Message-ID")).collect();
    for id in &acked {
        assert!(
            ids.contains(&format!("<{id}@test>")),
            "acknowledged {id} lost"
        );
    }
}
