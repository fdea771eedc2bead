//! The `[storage]` table: which queue backend a node uses. `"embedded"` (the default: SQLite
//! in `state_dir`) or `"postgres"` (a queue shared by several nodes). Parsing and validation
//! only; the PostgreSQL URL file is read when the store opens, not here.

use super::defaults::storage as default;
use super::{ConfigError, Ctx, HumanDuration};
use serde::Deserialize;
use std::path::PathBuf;
use std::time::Duration;
use toml::Spanned;

/// Where the queue lives.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum StorageConfig {
    /// SQLite in `state_dir`, one node.
    #[default]
    Embedded,
    /// PostgreSQL, shared by every node configured with the same database.
    Postgres(PostgresConfig),
}

/// How the connection to PostgreSQL is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PgTls {
    /// Plaintext (a unix socket or loopback).
    #[default]
    Disable,
    /// TLS required, any certificate.
    Require,
    /// TLS required, the certificate valid for the host name (Mozilla roots and `ca_file`).
    Verify,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostgresConfig {
    /// `postgres://user:password@host:port/db` or key=value form (None: read `url_file`).
    pub url: Option<String>,
    /// A file holding the URL, so the password is not in the config.
    pub url_file: Option<PathBuf>,
    pub tls: PgTls,
    /// Extra trusted CA certificates (PEM) for `verify`.
    pub ca_file: Option<PathBuf>,
    /// Connections in this node's pool.
    pub pool_size: usize,
    /// How long a claim holds recipients for this node without being renewed; after a node
    /// dies its claims expire after this long and another node delivers.
    pub lease: Duration,
    /// This node's name in leases and logs; unique per node.
    pub node: String,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawStorage {
    backend: Option<Spanned<String>>,
    url: Option<Spanned<String>>,
    url_file: Option<Spanned<String>>,
    tls: Option<Spanned<String>>,
    ca_file: Option<Spanned<String>>,
    pool_size: Option<Spanned<usize>>,
    lease: Option<Spanned<HumanDuration>>,
    node: Option<Spanned<String>>,
}

impl RawStorage {
    /// The first key set that only means something with `backend = "postgres"`.
    fn postgres_key(&self) -> Option<std::ops::Range<usize>> {
        [
            self.url.as_ref().map(Spanned::span),
            self.url_file.as_ref().map(Spanned::span),
            self.tls.as_ref().map(Spanned::span),
            self.ca_file.as_ref().map(Spanned::span),
            self.pool_size.as_ref().map(Spanned::span),
            self.lease.as_ref().map(Spanned::span),
            self.node.as_ref().map(Spanned::span),
        ]
        .into_iter()
        .flatten()
        .next()
    }
}

impl Ctx<'_> {
    pub(super) fn storage(
        &self,
        raw: RawStorage,
        hostname: &str,
    ) -> Result<StorageConfig, ConfigError> {
        match raw.backend.as_ref().map(|b| (b, b.get_ref().as_str())) {
            None | Some((_, "embedded")) => match raw.postgres_key() {
                Some(span) => Err(self.at(span, "only used with backend = \"postgres\"")),
                None => Ok(StorageConfig::Embedded),
            },
            Some((_, "postgres")) => self.postgres(raw, hostname),
            Some((b, other)) => Err(self.at(
                b.span(),
                &format!("unknown storage backend `{other}`: use \"embedded\" or \"postgres\""),
            )),
        }
    }

    fn postgres(&self, raw: RawStorage, hostname: &str) -> Result<StorageConfig, ConfigError> {
        let url = match (&raw.url, &raw.url_file) {
            (Some(_), Some(f)) => {
                return Err(self.at(f.span(), "set `url` or `url_file`, not both"));
            }
            (None, None) => {
                let span = raw.backend.as_ref().map_or(0..0, Spanned::span);
                return Err(self.at(
                    span,
                    "backend = \"postgres\" needs `url` (postgres://user@host/db) or `url_file` (a file holding it)",
                ));
            }
            (Some(u), None) => {
                u.get_ref()
                    .parse::<tokio_postgres::Config>()
                    .map_err(|e| self.at(u.span(), &format!("not a PostgreSQL URL: {e}")))?;
                Some(u.get_ref().clone())
            }
            (None, Some(f)) => {
                self.secret_file(Ok(f.span()), &self.resolve(f.get_ref()));
                None
            }
        };
        let tls = match raw.tls.as_ref().map(|t| (t, t.get_ref().as_str())) {
            None | Some((_, "disable")) => PgTls::Disable,
            Some((_, "require")) => PgTls::Require,
            Some((_, "verify")) => PgTls::Verify,
            Some((t, other)) => {
                return Err(self.at(
                    t.span(),
                    &format!(
                        "unknown tls mode `{other}`: use \"disable\", \"require\" or \"verify\""
                    ),
                ));
            }
        };
        if let (Some(c), false) = (&raw.ca_file, tls == PgTls::Verify) {
            return Err(self.at(c.span(), "ca_file is only used with tls = \"verify\""));
        }
        let pool_size = match &raw.pool_size {
            Some(p) if *p.get_ref() < 2 => {
                return Err(self.at(
                    p.span(),
                    "pool_size must be at least 2 (one connection writes while another reads)",
                ));
            }
            Some(p) => *p.get_ref(),
            None => default::POOL_SIZE,
        };
        let lease = match &raw.lease {
            Some(l) if l.get_ref().0 < Duration::from_secs(1) => {
                return Err(self.at(l.span(), "lease must be at least 1s"));
            }
            Some(l) => l.get_ref().0,
            None => default::LEASE,
        };
        let node = match &raw.node {
            Some(n) if n.get_ref().trim().is_empty() || n.get_ref().len() > 200 => {
                return Err(self.at(n.span(), "node must be a name of 1 to 200 characters"));
            }
            Some(n) => n.get_ref().trim().to_string(),
            None => hostname.to_string(),
        };
        Ok(StorageConfig::Postgres(PostgresConfig {
            url,
            url_file: raw.url_file.as_ref().map(|f| self.resolve(f.get_ref())),
            tls,
            ca_file: raw.ca_file.as_ref().map(|c| self.resolve(c.get_ref())),
            pool_size,
            lease,
            node,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::super::Config;
    use super::*;
    use std::path::Path;

    const DOMAIN: &str = "[[domain]]\nname = \"example.test\"\nprimary = [\"127.0.0.1:2526\"]\n";

    fn parse(storage: &str) -> Result<Config, ConfigError> {
        Config::parse(
            &format!("hostname = \"mx2a.test\"\n[storage]\n{storage}{DOMAIN}"),
            "test.toml",
            Path::new("/etc/mx2"),
        )
    }

    #[test]
    fn embedded_is_the_default() {
        let c = Config::parse(DOMAIN, "test.toml", Path::new("/etc/mx2")).unwrap();
        assert_eq!(c.storage, StorageConfig::Embedded);
        assert_eq!(
            parse("backend = \"embedded\"\n").unwrap().storage,
            StorageConfig::Embedded
        );
    }

    #[test]
    fn postgres_with_defaults_and_every_key() {
        let StorageConfig::Postgres(p) =
            parse("backend = \"postgres\"\nurl = \"postgres://mx2@db.test/mx2\"\n")
                .unwrap()
                .storage
        else {
            panic!("not postgres")
        };
        assert_eq!(p.node, "mx2a.test", "the hostname by default");
        assert_eq!(p.lease, Duration::from_secs(300));
        assert_eq!((p.pool_size, p.tls), (16, PgTls::Disable));
        let StorageConfig::Postgres(p) = parse(
            "backend = \"postgres\"\nurl_file = \"pg-url\"\ntls = \"verify\"\nca_file = \"ca.pem\"\npool_size = 4\nlease = \"2m\"\nnode = \"site-b-1\"\n",
        )
        .unwrap()
        .storage
        else {
            panic!("not postgres")
        };
        assert_eq!(p.url_file, Some(PathBuf::from("/etc/mx2/pg-url")));
        assert_eq!(p.ca_file, Some(PathBuf::from("/etc/mx2/ca.pem")));
        assert_eq!((p.pool_size, p.lease), (4, Duration::from_secs(120)));
        assert_eq!((p.tls, p.node.as_str()), (PgTls::Verify, "site-b-1"));
    }

    #[test]
    fn errors_name_file_line_and_key() {
        let cases = [
            (
                "backend = \"mysql\"\n",
                "test.toml:3:",
                "storage.backend",
                "unknown storage backend",
            ),
            (
                "backend = \"postgres\"\n",
                "test.toml:3:",
                "storage.backend",
                "needs `url`",
            ),
            (
                "backend = \"postgres\"\nurl = \"postgres://a@b/c\"\nurl_file = \"f\"\n",
                "test.toml:5:",
                "storage.url_file",
                "not both",
            ),
            (
                "backend = \"postgres\"\nurl = \"postgres://a@b:notaport/c\"\n",
                "test.toml:4:",
                "storage.url",
                "not a PostgreSQL URL",
            ),
            (
                "backend = \"postgres\"\nurl_file = \"f\"\ntls = \"yes\"\n",
                "test.toml:5:",
                "storage.tls",
                "unknown tls mode",
            ),
            (
                "backend = \"postgres\"\nurl_file = \"f\"\nca_file = \"ca.pem\"\n",
                "test.toml:5:",
                "storage.ca_file",
                "only used with tls",
            ),
            (
                "backend = \"postgres\"\nurl_file = \"f\"\npool_size = 1\n",
                "test.toml:5:",
                "storage.pool_size",
                "at least 2",
            ),
            (
                "backend = \"postgres\"\nurl_file = \"f\"\nlease = \"10ms\"\n",
                "test.toml:5:",
                "storage.lease",
                "at least 1s",
            ),
            (
                "backend = \"postgres\"\nurl_file = \"f\"\nnode = \" \"\n",
                "test.toml:5:",
                "storage.node",
                "node must be",
            ),
            (
                "url = \"postgres://a@b/c\"\n",
                "test.toml:3:",
                "storage.url",
                "only used with backend",
            ),
            (
                "leese = \"5m\"\n",
                "test.toml:3:",
                "storage.leese",
                "unknown field",
            ),
        ];
        for (storage, at, key, says) in cases {
            let e = parse(storage).unwrap_err().to_string();
            assert!(e.starts_with(at), "{storage}: {e}");
            assert!(e.contains(&format!("key `{key}`")), "{storage}: {e}");
            assert!(e.contains(says), "{storage}: {e}");
        }
    }
}
