//! `mx2 init`: writes a starter configuration from flags, or from a few questions when a
//! flag is missing and stdin is a terminal; checks it as `mx2 config check` does before
//! writing; then prints the DNS records to publish and the command to run next. Never
//! overwrites a file without `--force`.

use crate::config::{Config, HostPort, is_domain_name};
use clap::Args;
use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Args, Debug, Default)]
pub struct InitArgs {
    /// This server's name: the name its MX records point to.
    #[arg(long)]
    pub hostname: Option<String>,
    /// A domain to back up and its primary, NAME=HOST[:PORT] (repeat for more domains).
    #[arg(long = "domain", value_name = "NAME=PRIMARY")]
    pub domains: Vec<String>,
    /// An address to accept SMTP on, e.g. 0.0.0.0:25 (repeat for more).
    #[arg(long)]
    pub listen: Vec<String>,
    /// Write a random admin token next to the configuration and require it.
    #[arg(long)]
    pub admin_token: bool,
    /// Where the admin API and dashboard listen (default 127.0.0.1:8025).
    #[arg(long)]
    pub admin_listen: Option<String>,
    /// Standby mode: refuse new mail (451) while the primary is up.
    #[arg(long)]
    pub standby: bool,
    /// Where the queue lives (default /var/lib/mx2).
    #[arg(long)]
    pub state_dir: Option<PathBuf>,
    /// The file to write.
    #[arg(short, long, default_value = "/etc/mx2/mx2.toml")]
    pub output: PathBuf,
    /// Overwrite an existing file.
    #[arg(long)]
    pub force: bool,
}

/// What the starter configuration says, gathered from flags and answers.
#[derive(Debug, PartialEq)]
pub struct Answers {
    pub hostname: String,
    pub domains: Vec<(String, HostPort)>,
    pub listen: Vec<String>,
    pub admin_token: bool,
    pub admin_listen: Option<String>,
    pub standby: bool,
    pub state_dir: Option<PathBuf>,
}

const DEFAULT_LISTEN: &str = "0.0.0.0:25, [::]:25";

/// `NAME=HOST[:PORT]` → the domain (lower-cased) and its primary.
pub fn parse_domain(s: &str) -> Result<(String, HostPort), String> {
    let (name, primary) = s.split_once('=').ok_or_else(|| {
        format!("`{s}`: expected NAME=PRIMARY, e.g. example.com=mail.example.com")
    })?;
    let name = name.trim().trim_end_matches('.').to_ascii_lowercase();
    if !is_domain_name(&name) {
        return Err(format!("`{name}` is not a domain name"));
    }
    let primary =
        HostPort::parse(primary.trim()).map_err(|e| format!("the primary of {name}: {e}"))?;
    Ok((name, primary))
}

fn quoted(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

fn list(items: &[String]) -> String {
    let q: Vec<String> = items.iter().map(|s| quoted(s)).collect();
    format!("[{}]", q.join(", "))
}

/// The configuration text for these answers (`token_file` is named only with a token).
pub fn render(a: &Answers) -> String {
    let mut t =
        String::from("# mx2 configuration written by `mx2 init`; every key: man 5 mx2.toml\n\n");
    t += &format!("hostname = {}\n", quoted(&a.hostname));
    if let Some(dir) = &a.state_dir {
        t += &format!("state_dir = {}\n", quoted(&dir.display().to_string()));
    }
    t += &format!("\n[smtp]\nlisten = {}\n", list(&a.listen));
    if a.admin_token || a.admin_listen.is_some() {
        t += "\n[admin]\n";
        if let Some(l) = &a.admin_listen {
            t += &format!("listen = {}\n", quoted(l));
        }
        if a.admin_token {
            t += "token_file = \"admin-token\"          # next to this file\n";
        }
    }
    for (name, primary) in &a.domains {
        t += &format!(
            "\n[[domain]]\nname = {}\nprimary = [{}]\n",
            quoted(name),
            quoted(&primary.to_string())
        );
        if a.standby {
            t += "standby = true                     # 451 while the primary is up\n";
        }
    }
    t
}

/// The DNS records to publish, and what to run next.
pub fn next_steps(a: &Answers) -> String {
    let mut t =
        String::from("Publish these DNS records (keep the primary's MX at a lower number):\n");
    for (name, primary) in &a.domains {
        t += &format!("  {name}.  IN MX 10 {}.\n", primary.host);
        t += &format!("  {name}.  IN MX 20 {}.\n", a.hostname);
    }
    t += &format!(
        "and make sure {} has an address record and matching reverse DNS.\nThen check each domain:\n",
        a.hostname
    );
    for (name, _) in &a.domains {
        t += &format!("  mx2 check {name}\n");
    }
    t
}

/// Asks `question` on `out`, reads one line; an empty answer takes `default`.
fn ask(
    input: &mut dyn BufRead,
    out: &mut dyn Write,
    question: &str,
    default: &str,
) -> Result<String, String> {
    if default.is_empty() {
        write!(out, "{question}: ")
    } else {
        write!(out, "{question} [{default}]: ")
    }
    .and_then(|()| out.flush())
    .map_err(|e| e.to_string())?;
    let mut line = String::new();
    match input.read_line(&mut line) {
        Ok(0) => Err("no answer (end of input)".into()),
        Ok(_) => {
            let a = line.trim();
            Ok(if a.is_empty() { default } else { a }.to_string())
        }
        Err(e) => Err(e.to_string()),
    }
}

fn yes(answer: &str) -> bool {
    matches!(answer.to_ascii_lowercase().as_str(), "y" | "yes")
}

/// Fills what the flags left out: from questions when `interactive`, else an error for the
/// required parts (hostname, domains) and defaults for the rest.
pub fn gather(
    args: &InitArgs,
    interactive: bool,
    input: &mut dyn BufRead,
    out: &mut dyn Write,
) -> Result<Answers, String> {
    let mut domains = args
        .domains
        .iter()
        .map(|d| parse_domain(d))
        .collect::<Result<Vec<_>, _>>()?;
    let asking = interactive && (args.hostname.is_none() || domains.is_empty());
    let hostname = match &args.hostname {
        Some(h) => h.clone(),
        None if asking => ask(input, out, "This server's host name (its MX name)", "")?,
        None => return Err("give --hostname (the name the MX records point to)".into()),
    };
    let hostname = hostname.trim_end_matches('.').to_ascii_lowercase();
    if !is_domain_name(&hostname) {
        return Err(format!("`{hostname}` is not a host name"));
    }
    if domains.is_empty() {
        if !asking {
            return Err("give at least one --domain NAME=PRIMARY".into());
        }
        loop {
            let q = if domains.is_empty() {
                "A domain to back up, as NAME=PRIMARY (e.g. example.com=mail.example.com)"
            } else {
                "Another domain (empty: done)"
            };
            let a = ask(input, out, q, "")?;
            if a.is_empty() {
                if domains.is_empty() {
                    continue;
                }
                break;
            }
            match parse_domain(&a) {
                Ok(d) => domains.push(d),
                Err(e) => writeln!(out, "  {e}").map_err(|e| e.to_string())?,
            }
        }
    }
    let listen = if !args.listen.is_empty() {
        args.listen.clone()
    } else {
        let a = if asking {
            ask(input, out, "Addresses to accept SMTP on", DEFAULT_LISTEN)?
        } else {
            DEFAULT_LISTEN.to_string()
        };
        a.split([',', ' '])
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect()
    };
    let admin_token = args.admin_token
        || (asking
            && yes(&ask(
                input,
                out,
                "Require a token for the admin API? (y/n)",
                "n",
            )?));
    let standby = args.standby
        || (asking
            && yes(&ask(
                input,
                out,
                "Standby mode: refuse mail while the primary is up? (recommended, y/n)",
                "y",
            )?));
    Ok(Answers {
        hostname,
        domains,
        listen,
        admin_token,
        admin_listen: args.admin_listen.clone(),
        standby,
        state_dir: args.state_dir.clone(),
    })
}

/// A random token, 32 bytes as hex.
fn token() -> Result<String, String> {
    use rand_core::RngCore;
    let mut bytes = [0u8; 32];
    rand_core::OsRng
        .try_fill_bytes(&mut bytes)
        .map_err(|e| format!("cannot get random bytes: {e}"))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Writes `text` to `path` with `mode`; without `force` an existing file is an error.
fn write_file(path: &Path, text: &str, mode: u32, force: bool) -> Result<(), String> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut o = std::fs::OpenOptions::new();
    o.write(true).mode(mode);
    if force {
        o.create(true).truncate(true);
    } else {
        o.create_new(true);
    }
    let mut f = o.open(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::AlreadyExists => {
            format!("{} exists; give --force to overwrite it", path.display())
        }
        _ => format!("cannot write {}: {e}", path.display()),
    })?;
    f.write_all(text.as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}

pub fn run(args: InitArgs) -> ExitCode {
    let stdin = std::io::stdin();
    let interactive = stdin.is_terminal();
    let answers = match gather(
        &args,
        interactive,
        &mut stdin.lock(),
        &mut std::io::stdout(),
    ) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("mx2 init: {e}");
            return ExitCode::from(2);
        }
    };
    let path = &args.output;
    if path.exists() && !args.force {
        eprintln!(
            "mx2 init: {} exists; give --force to overwrite it",
            path.display()
        );
        return ExitCode::from(2);
    }
    let text = render(&answers);
    let base = crate::config::base_dir(path);
    if let Err(e) = std::fs::create_dir_all(&base) {
        eprintln!("mx2 init: cannot create {}: {e}", base.display());
        return ExitCode::from(1);
    }
    let token_path = base.join("admin-token");
    if answers.admin_token {
        let written = token().and_then(|t| write_file(&token_path, &(t + "\n"), 0o600, args.force));
        if let Err(e) = written {
            eprintln!("mx2 init: {e}");
            return ExitCode::from(1);
        }
    }
    // The same checks as `mx2 config check`, before anything is written over.
    let config = match Config::parse(&text, &path.display().to_string(), &base) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("mx2 init: the configuration would not load: {e}");
            return ExitCode::from(2);
        }
    };
    if let Err(e) = write_file(path, &text, 0o640, args.force) {
        eprintln!("mx2 init: {e}");
        return ExitCode::from(1);
    }
    println!("wrote {}", path.display());
    if answers.admin_token {
        println!("wrote {} (the admin API's token)", token_path.display());
    }
    for w in &config.warnings {
        println!("  warning: {w}");
    }
    print!("\n{}", next_steps(&answers));
    println!("Start it: mx2 serve --config {}", path.display());
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(domains: &[&str]) -> InitArgs {
        InitArgs {
            hostname: Some("mx2.example.net".into()),
            domains: domains.iter().map(|s| s.to_string()).collect(),
            output: "/tmp/x.toml".into(),
            ..Default::default()
        }
    }

    #[test]
    fn flags_alone_need_no_questions() {
        let mut out = Vec::new();
        let a = gather(
            &args(&["Example.com=mail.example.com"]),
            false,
            &mut &b""[..],
            &mut out,
        )
        .unwrap();
        assert!(out.is_empty());
        assert_eq!(a.domains[0].0, "example.com");
        assert_eq!(a.listen, ["0.0.0.0:25", "[::]:25"]);
        let text = render(&a);
        let c = Config::parse(&text, "t", Path::new("/")).unwrap();
        assert_eq!(c.hostname, "mx2.example.net");
        assert_eq!(c.domains[0].name, "example.com");
        let dns = next_steps(&a);
        assert!(dns.contains("example.com.  IN MX 20 mx2.example.net."));
        assert!(dns.contains("example.com.  IN MX 10 mail.example.com."));
        assert!(dns.contains("mx2 check example.com"));
    }

    #[test]
    fn missing_flags_without_a_terminal_are_errors() {
        let mut out = Vec::new();
        let e = gather(&args(&[]), false, &mut &b""[..], &mut out).unwrap_err();
        assert!(e.contains("--domain"), "{e}");
        let e = gather(&args(&["nonsense"]), false, &mut &b""[..], &mut out).unwrap_err();
        assert!(e.contains("NAME=PRIMARY"), "{e}");
    }

    #[test]
    fn questions_fill_what_flags_leave_out() {
        let mut a = args(&[]);
        a.hostname = None;
        let mut out = Vec::new();
        let input =
            b"mx2.example.net\nbad\nexample.com=mail.example.com:2525\n\n127.0.0.1:25\ny\nn\n";
        let got = gather(&a, true, &mut &input[..], &mut out).unwrap();
        let out = String::from_utf8(out).unwrap();
        assert!(out.contains("expected NAME=PRIMARY"), "{out}");
        assert_eq!(got.hostname, "mx2.example.net");
        assert_eq!(got.domains.len(), 1);
        assert_eq!(got.domains[0].1.port, 25 + 2500);
        assert_eq!(got.listen, ["127.0.0.1:25"]);
        assert!(got.admin_token && !got.standby);
        let e = gather(&a, true, &mut &b"mx2.example.net\n"[..], &mut Vec::new()).unwrap_err();
        assert!(e.contains("end of input"), "{e}");
    }
}
