//! A throwaway PostgreSQL server for tests: Debian's binaries (the newest version under
//! /usr/lib/postgresql), `initdb` into a temporary directory (as the `postgres` user when the
//! tests run as root), listening on 127.0.0.1 at a free port with its socket in that
//! directory, fsync on. One server per test binary; each test gets a fresh database. A watchdog
//! process stops the server and removes its directory when the test process exits, whether it
//! passed, failed or was killed. Missing binaries fail the test with a clear message.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};

pub struct Pg {
    pub port: u16,
    bin: PathBuf,
    dir: PathBuf,
}

/// The newest PostgreSQL server binaries installed, or a failure saying how to get them.
fn binaries() -> PathBuf {
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    found.sort();
    match found.pop() {
        Some((_, bin)) => bin,
        None => panic!(
            "PostgreSQL server binaries not found under /usr/lib/postgresql/*/bin: these tests need \
             a real server. Install Debian's `postgresql` package (`apt-get install -y postgresql`; \
             .ci/run does)."
        ),
    }
}

fn running_as_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// A command run as the `postgres` user when we are root (initdb refuses root).
fn as_server_user(program: &Path) -> Command {
    if running_as_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

fn run(mut c: Command, what: &str) {
    let out = c.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Pg {
    /// The server shared by this test binary, started on first use.
    pub fn shared() -> &'static Pg {
        static PG: OnceLock<Pg> = OnceLock::new();
        PG.get_or_init(Pg::start)
    }

    fn start() -> Pg {
        let bin = binaries();
        let dir = tempfile::Builder::new()
            .prefix("mx2-pg-")
            .tempdir()
            .unwrap()
            .keep();
        if running_as_root() {
            run(
                {
                    let mut c = Command::new("chown");
                    c.arg("postgres:").arg(&dir);
                    c
                },
                "chown the test database directory",
            );
        }
        let data = dir.join("data");
        let mut initdb = as_server_user(&bin.join("initdb"));
        initdb.arg("-D").arg(&data).args([
            "-A",
            "trust",
            "-U",
            "mx2",
            "-E",
            "UTF8",
            "--locale=C",
            "--no-sync",
        ]);
        run(initdb, "initdb");
        let port = super::free_port();
        let options = format!(
            "-p {port} -h 127.0.0.1 -k {} -c fsync=on -c synchronous_commit=on -c max_connections=300",
            dir.display()
        );
        let mut start = as_server_user(&bin.join("pg_ctl"));
        start
            .arg("-D")
            .arg(&data)
            .arg("-l")
            .arg(dir.join("server.log"))
            .args(["-o", &options, "-w", "start"])
            .stdout(Stdio::null());
        run(start, "pg_ctl start");
        // The watchdog: when this test process is gone, stop the server and clean up.
        let stop = if running_as_root() {
            "runuser -u postgres -- "
        } else {
            ""
        };
        let script = format!(
            "while kill -0 {pid} 2>/dev/null; do sleep 0.5; done; {stop}'{pg_ctl}' -D '{data}' -m immediate stop >/dev/null 2>&1; rm -rf '{dir}'",
            pid = std::process::id(),
            pg_ctl = bin.join("pg_ctl").display(),
            data = data.display(),
            dir = dir.display(),
        );
        // In the background of a shell that exits at once, so nothing is left to wait for.
        let started = Command::new("sh")
            .args(["-c", &format!("({script}) </dev/null >/dev/null 2>&1 &")])
            .status()
            .expect("start the PostgreSQL watchdog");
        assert!(started.success(), "cannot start the PostgreSQL watchdog");
        Pg { port, bin, dir }
    }

    /// A new, empty database; returns its URL.
    pub fn fresh_db(&self) -> String {
        static N: AtomicUsize = AtomicUsize::new(0);
        let name = format!(
            "t{}_{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        );
        self.sql("postgres", &format!("CREATE DATABASE {name}"));
        self.url(&name)
    }

    pub fn url(&self, db: &str) -> String {
        format!("postgres://mx2@127.0.0.1:{}/{db}", self.port)
    }

    /// Runs SQL with psql; returns its unaligned output.
    pub fn sql(&self, db: &str, sql: &str) -> String {
        let out = Command::new(self.bin.join("psql"))
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "mx2",
                "-d",
                db,
            ])
            .args(["-v", "ON_ERROR_STOP=1", "-Atc", sql])
            .output()
            .expect("run psql");
        assert!(
            out.status.success(),
            "psql {sql}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// Turns TLS on (a certificate for 127.0.0.1 and localhost, signed by a test CA; plain
    /// connections still work); returns the CA certificate's file.
    pub fn enable_tls(&self) -> PathBuf {
        static CA: OnceLock<PathBuf> = OnceLock::new();
        CA.get_or_init(|| {
            let pki = super::pki::Pki::new();
            let dir = self.dir.join("tls");
            std::fs::create_dir_all(&dir).unwrap();
            let ca = pki.write_ca(&dir);
            let leaf = pki.leaf(&dir, "server", &["127.0.0.1", "localhost"]);
            run(
                {
                    let mut c = Command::new("chmod");
                    c.arg("600").arg(&leaf.key);
                    c
                },
                "chmod the server key",
            );
            if running_as_root() {
                run(
                    {
                        let mut c = Command::new("chown");
                        c.arg("-R").arg("postgres:").arg(&dir);
                        c
                    },
                    "chown the server certificate",
                );
            }
            for (key, value) in [("ssl_cert_file", &leaf.cert), ("ssl_key_file", &leaf.key)] {
                self.sql(
                    "postgres",
                    &format!("ALTER SYSTEM SET {key} = '{}'", value.display()),
                );
            }
            self.sql("postgres", "ALTER SYSTEM SET ssl = on");
            self.sql("postgres", "SELECT pg_reload_conf()");
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            while self.sql("postgres", "SHOW ssl") != "on" {
                assert!(
                    std::time::Instant::now() < deadline,
                    "PostgreSQL did not turn TLS on; log:\n{}",
                    self.log()
                );
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            ca
        })
        .clone()
    }

    /// The server's log, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default()
    }
}
