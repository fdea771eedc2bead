//! The command line: `mx2 serve`, `config check`, `check`, `status`, `reload`, `queue …`
//! (with `adopt` and `reset` for a damaged queue), `domain …` and `tenant …` for the
//! domains and tenants managed at run time, `drill` (fire drills), and `inbox passwd` for
//! the emergency inbox, `init` (a starter configuration) and the hidden `generate` (man pages
//! and completions for the package). Parses arguments, loads the config, sets up logging, and maps errors
//! to exit codes (2: configuration or usage, 1: runtime).

mod api;
mod domain;
mod drill;
mod generate;
mod inbox;
mod init;
mod queue;
mod recover;
mod reference;
mod settings;
mod status;
mod tenant;

use crate::config::{Config, LogFormat};
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser, Debug)]
#[command(
    name = "mx2",
    version,
    about = "mx2: a secondary MX that keeps mail safe while the primary is away"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Cmd,
}

#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// Run the server.
    Serve {
        /// The configuration file.
        #[arg(short, long, default_value = "/etc/mx2/mx2.toml")]
        config: PathBuf,
    },
    /// Audit a domain's MX setup: records, preferences, addresses, reverse DNS, and whether
    /// primary and backup are in different networks. Exit code 0 ok, 1 warnings, 2 failures.
    Check {
        /// The domain to audit.
        domain: String,
        /// Ask this DNS server (IP or IP:PORT) instead of the system's.
        #[arg(long)]
        resolver: Option<String>,
        /// A MaxMind database (.mmdb) for ASN, country and distance checks.
        #[arg(long)]
        geoip: Option<PathBuf>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
        /// Also talk to each MX host (banner, EHLO, STARTTLS and its certificate, postmaster
        /// and relay tests on the backups; never DATA).
        #[arg(long)]
        smtp: bool,
        /// The port for --smtp.
        #[arg(long, default_value_t = 25)]
        smtp_port: u16,
        /// Extra trusted CA certificates (PEM) for the STARTTLS check.
        #[arg(long)]
        ca_file: Option<PathBuf>,
        /// DNSSEC trust anchor (DNSKEY records, zone-file syntax) for the TLSA checks, instead
        /// of the IANA root keys.
        #[arg(long)]
        trust_anchor: Option<PathBuf>,
    },
    /// The queue: list, show, export (these also work while the server is stopped), flush,
    /// hold, release, delete, bounce.
    Queue {
        #[command(subcommand)]
        action: queue::QueueCmd,
    },
    /// Domains backed up at run time, besides the configuration file's: add, set, remove,
    /// list, show, verify, recipients (asks the running server).
    Domain {
        #[command(subcommand)]
        action: domain::DomainCmd,
    },
    /// The emergency inbox: `passwd` gives a user a password (asks the running server).
    Inbox {
        #[command(subcommand)]
        action: inbox::InboxCmd,
    },
    /// Tenants (customers) of a backup-MX service and their API tokens (asks the running
    /// server).
    Tenant {
        #[command(subcommand)]
        action: tenant::TenantCmd,
    },
    /// Run a fire drill of a domain now: find this server in its MX records, send a marked
    /// message to its canary (drill_rcpt) as an outside sender, hold it, hand it to the
    /// primary, and say what each step found. Exit code 1 when the drill failed.
    Drill {
        domain: String,
        /// Print the domain's last drills instead of running one.
        #[arg(long)]
        history: bool,
        #[command(flatten)]
        target: api::Target,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Each primary's state and what is held for it (asks the running server).
    Status {
        #[command(flatten)]
        target: api::Target,
        #[arg(long)]
        json: bool,
    },
    /// Make the running server read its configuration file again (like SIGHUP, but says
    /// whether it worked).
    Reload {
        #[command(flatten)]
        target: api::Target,
    },
    /// Configuration tools.
    Config {
        #[command(subcommand)]
        action: ConfigCmd,
    },
    /// Write a starter configuration (from flags, or a few questions on a terminal), check it
    /// as `config check` does, and print the DNS records to publish. Never overwrites a file
    /// without --force.
    Init(init::InitArgs),
    /// Write man pages or shell completions (for packaging).
    #[command(hide = true)]
    Generate {
        #[command(subcommand)]
        what: generate::GenerateCmd,
    },
}

#[derive(Subcommand, Debug)]
pub enum ConfigCmd {
    /// Validate a configuration file and print what it configures.
    Check {
        #[arg(short, long, default_value = "/etc/mx2/mx2.toml")]
        config: PathBuf,
    },
}

fn load(path: &std::path::Path) -> Result<Config, ExitCode> {
    Config::load(path).map_err(|e| {
        eprintln!("mx2: {e}");
        ExitCode::from(2)
    })
}

fn init_logging(config: &Config) {
    use tracing_subscriber::EnvFilter;
    let filter = std::env::var("MX2_LOG")
        .ok()
        .and_then(|v| EnvFilter::try_new(v).ok())
        .or_else(|| EnvFilter::try_new(&config.log.level).ok())
        .unwrap_or_else(|| EnvFilter::new("info"));
    // Colour only for a person at a terminal: never in a file, the journal or JSON.
    let colour = matches!(config.log.format, LogFormat::Text)
        && std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colour)
        .with_writer(std::io::stderr);
    match config.log.format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

fn check(
    domain: &str,
    resolver: Option<&str>,
    dnssec: &crate::config::Dnssec,
    opts: crate::check::Options,
    json: bool,
) -> ExitCode {
    let servers = match resolver.map(|r| {
        r.parse::<std::net::SocketAddr>().or_else(|_| {
            r.parse::<std::net::IpAddr>()
                .map(|ip| std::net::SocketAddr::new(ip, 53))
        })
    }) {
        None => Vec::new(),
        Some(Ok(a)) => vec![a],
        Some(Err(_)) => {
            eprintln!(
                "mx2: --resolver {}: expected an IP address or IP:PORT",
                resolver.unwrap_or("")
            );
            return ExitCode::from(2);
        }
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("mx2: cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    rt.block_on(async {
        let dns = match crate::dns::Dns::new(&servers, std::time::Duration::from_secs(5), dnssec) {
            Ok(d) => d,
            Err(e) => {
                eprintln!("mx2: {e}");
                return ExitCode::from(2);
            }
        };
        let report = crate::check::run(domain, &dns, &opts).await;
        println!("{}", if json { report.json() } else { report.text() });
        ExitCode::from(report.exit_code())
    })
}

pub fn main() -> ExitCode {
    crate::memory::keep_large_buffers_apart();
    let cli = Cli::parse();
    match cli.command {
        Cmd::Queue { action } => queue::run(action),
        Cmd::Domain { action } => domain::run(action),
        Cmd::Tenant { action } => tenant::run(action),
        Cmd::Inbox { action } => inbox::run(action),
        Cmd::Status { target, json } => status::status(&target, json),
        Cmd::Drill {
            domain,
            history,
            target,
            json,
        } => drill::run(&domain, history, &target, json),
        Cmd::Reload { target } => status::reload(&target),
        Cmd::Init(args) => init::run(args),
        Cmd::Generate { what } => generate::run(what),
        Cmd::Check {
            domain,
            resolver,
            geoip,
            json,
            smtp,
            smtp_port,
            ca_file,
            trust_anchor,
        } => {
            let opts = crate::check::Options {
                geoip,
                smtp_port: smtp.then_some(smtp_port),
                ca_file,
            };
            let dnssec = crate::config::Dnssec::Validate {
                trust_anchor,
                strict: false,
            };
            check(&domain, resolver.as_deref(), &dnssec, opts, json)
        }
        Cmd::Config {
            action: ConfigCmd::Check { config },
        } => {
            let c = match load(&config) {
                Ok(c) => c,
                Err(code) => return code,
            };
            println!("{}: OK", config.display());
            for w in &c.warnings {
                println!("  warning: {w}");
            }
            println!("  hostname   {}", c.hostname);
            println!("  state_dir  {}", c.state_dir.display());
            println!(
                "  listen     {}",
                c.smtp
                    .listen
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            for d in &c.domains {
                let route = match &d.route {
                    crate::config::DomainRoute::Primary(hosts) => hosts
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(", "),
                    crate::config::DomainRoute::Mx => {
                        "MX records (hosts more preferred than this server)".into()
                    }
                };
                println!("  domain     {} → {route}", d.name);
            }
            ExitCode::SUCCESS
        }
        Cmd::Serve { config } => {
            let c = match load(&config) {
                Ok(c) => c,
                Err(code) => return code,
            };
            init_logging(&c);
            for w in &c.warnings {
                tracing::warn!("{w}");
            }
            let rt = match tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("mx2: cannot start the runtime: {e}");
                    return ExitCode::from(1);
                }
            };
            match rt.block_on(crate::server::serve(c, &config)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!("{e}");
                    eprintln!("mx2: {e}");
                    ExitCode::from(1)
                }
            }
        }
    }
}
