//! Debian's Postfix as a real peer: an instance of its own (`postfix -c DIR`) in a temporary
//! directory, listening on a loopback port, never touching the system's Postfix or DNS.
//! Needs root (Postfix's master drops to the `postfix` user) and the `postfix` package;
//! `.ci/run` installs it without letting it configure or start the system instance.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

pub struct Postfix {
    pub base: PathBuf,
    pub port: u16,
    etc: PathBuf,
}

/// Why these tests cannot run here, in words that say what to do.
fn preflight() {
    let found = Command::new("postconf")
        .args(["-d", "-h", "mail_version"])
        .output();
    assert!(
        found.is_ok_and(|o| o.status.success()),
        "Debian's postfix package is needed (the tests run it as a real client and primary):\n  \
         echo 'postfix postfix/main_mailer_type select No configuration' | debconf-set-selections\n  \
         DEBIAN_FRONTEND=noninteractive apt-get install -y postfix\n(.ci/run does this)"
    );
    let uid = Command::new("id").arg("-u").output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&uid.stdout).trim(),
        "0",
        "the Postfix interop tests need root: Postfix's master starts its daemons as the postfix user"
    );
}

fn id_of(flag: &str) -> String {
    let o = Command::new("id").args([flag, "postfix"]).output().unwrap();
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

impl Postfix {
    /// Starts an instance called `name` on `port` with Debian's master.cf (no chroot) and a
    /// main.cf of a few loopback-only settings plus `extra` (later settings win).
    pub fn start(name: &str, port: u16, extra: &str) -> Postfix {
        preflight();
        let base = tempfile::Builder::new()
            .prefix(&format!("mx2-postfix-{name}-"))
            .tempdir()
            .unwrap()
            .keep();
        // The delivery agents run as the postfix user and must reach the mailboxes.
        std::fs::set_permissions(&base, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        let etc = base.join("etc");
        for d in ["etc", "queue", "data", "mail"] {
            std::fs::create_dir_all(base.join(d)).unwrap();
        }
        for d in ["data", "mail"] {
            let ok = Command::new("chown")
                .args(["postfix:postfix"])
                .arg(base.join(d))
                .status()
                .unwrap();
            assert!(ok.success());
        }
        let main_cf = format!(
            "compatibility_level = 3.6
queue_directory = {b}/queue
data_directory = {b}/data
maillog_file = {b}/postfix.log
maillog_file_prefixes = {b}
myhostname = {name}.postfix.test
mydestination =
alias_maps =
alias_database =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
smtp_dns_support_level = disabled
smtpd_peername_lookup = no
biff = no
virtual_minimum_uid = 1
virtual_uid_maps = static:{uid}
virtual_gid_maps = static:{gid}
virtual_mailbox_base = {b}/mail
{extra}
",
            b = base.display(),
            uid = id_of("-u"),
            gid = id_of("-g"),
        );
        std::fs::write(etc.join("main.cf"), main_cf).unwrap();
        // Debian's master.cf, its SMTP listener moved to our port, nothing chrooted (the
        // instance directory has no jail).
        let master = std::fs::read_to_string("/etc/postfix/master.cf")
            .expect("/etc/postfix/master.cf (from the postfix package)");
        let mut out = String::new();
        for line in master.lines() {
            let mut fields: Vec<String> = line.split_whitespace().map(str::to_string).collect();
            let service = !line.starts_with(['#', ' ', '\t']) && fields.len() >= 8;
            if service {
                if fields[0] == "smtp" && fields[1] == "inet" {
                    fields[0] = format!("127.0.0.1:{port}");
                }
                fields[4] = "n".into();
                out.push_str(&fields.join(" "));
            } else {
                out.push_str(line);
            }
            out.push('\n');
        }
        std::fs::write(etc.join("master.cf"), out).unwrap();
        let p = Postfix { base, port, etc };
        let r = Command::new("postfix")
            .arg("-c")
            .arg(&p.etc)
            .arg("start")
            .output()
            .unwrap();
        assert!(
            r.status.success(),
            "postfix -c {} start: {}\n{}",
            p.etc.display(),
            String::from_utf8_lossy(&r.stderr),
            p.log()
        );
        let start = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "Postfix {name} does not listen on {port}; its log:\n{}",
                p.log()
            );
            thread::sleep(Duration::from_millis(50));
        }
        p
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.base.join("postfix.log")).unwrap_or_default()
    }

    /// Messages in the instance's queue (any state).
    pub fn queued(&self) -> usize {
        ["maildrop", "incoming", "active", "deferred", "hold"]
            .iter()
            .map(|q| count_files(&self.base.join("queue").join(q)))
            .sum()
    }

    /// The messages delivered to the Maildir `mailbox` (relative to the mailbox base).
    pub fn maildir(&self, mailbox: &str) -> Vec<Vec<u8>> {
        let new = self.base.join("mail").join(mailbox).join("new");
        let mut files: Vec<PathBuf> = std::fs::read_dir(new)
            .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
            .unwrap_or_default();
        files.sort();
        files.iter().filter_map(|f| std::fs::read(f).ok()).collect()
    }

    fn master_alive(&self) -> bool {
        std::fs::read_to_string(self.base.join("queue/pid/master.pid"))
            .ok()
            .and_then(|p| p.trim().parse::<u32>().ok())
            .is_some_and(|pid| Path::new(&format!("/proc/{pid}")).exists())
    }
}

fn count_files(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .filter_map(|e| e.ok())
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => count_files(&e.path()),
            Ok(_) => 1,
            Err(_) => 0,
        })
        .sum()
}

impl Drop for Postfix {
    fn drop(&mut self) {
        let _ = Command::new("postfix")
            .arg("-c")
            .arg(&self.etc)
            .arg("stop")
            .output();
        let start = Instant::now();
        while self.master_alive() && start.elapsed() < Duration::from_secs(20) {
            thread::sleep(Duration::from_millis(100));
        }
        if thread::panicking() {
            eprintln!("Postfix test directory kept: {}", self.base.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.base);
        }
    }
}
