//! Opening the PostgreSQL store: the URL (or the file holding it), TLS to the server
//! (rustls: `require` or `verify`), the pool, the schema migration under a lock, releasing
//! this node's claims from its previous run, and starting the writer, the lease renewal,
//! the folding of the queue counters and the giving back of free space.
//! Nothing here runs the queue's operations.

use super::{
    Inner, Postgres, Tls, counts, ms, pg_error, pool_error, reclaim, renew_leases, schema, sweep,
    writer,
};
use crate::config::{PgTls, PostgresConfig, TlsMode, TlsPolicy};
use crate::queue::StoreError;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use std::sync::Arc;
use std::time::Duration;
use tracing::info;

impl Postgres {
    /// Connects, brings the schema up to date (under a lock, so several nodes may start at
    /// once), releases this node's claims left by a previous run, and starts the group-commit
    /// writer, the lease renewal and the counters' folding.
    pub async fn open(config: &PostgresConfig) -> Result<Self, StoreError> {
        let url = match (&config.url, &config.url_file) {
            (Some(u), _) => u.clone(),
            (None, Some(f)) => std::fs::read_to_string(f)
                .map_err(|e| {
                    StoreError::Backend(format!("cannot read url_file {}: {e}", f.display()))
                })?
                .trim()
                .to_string(),
            (None, None) => return Err(StoreError::Backend("no PostgreSQL url".into())),
        };
        let mut pg: tokio_postgres::Config = url
            .parse()
            .map_err(|e| StoreError::Backend(format!("not a PostgreSQL URL: {e}")))?;
        pg.application_name(format!("mx2 {}", config.node));
        let tls = match config.tls {
            PgTls::Disable => {
                pg.ssl_mode(tokio_postgres::config::SslMode::Disable);
                Tls::Off
            }
            mode => {
                pg.ssl_mode(tokio_postgres::config::SslMode::Require);
                let policy = TlsPolicy {
                    mode: if mode == PgTls::Verify {
                        TlsMode::Verify
                    } else {
                        TlsMode::Required
                    },
                    ca_file: config.ca_file.clone(),
                    pin: None,
                };
                let rustls = crate::tls::client_config(&policy).map_err(StoreError::Backend)?;
                Tls::Rustls(tokio_postgres_rustls::MakeRustlsConnect::new(rustls))
            }
        };
        let manager_config = ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        };
        let manager = match &tls {
            Tls::Off => Manager::from_config(pg.clone(), tokio_postgres::NoTls, manager_config),
            Tls::Rustls(t) => Manager::from_config(pg.clone(), t.clone(), manager_config),
        };
        let pool = Pool::builder(manager)
            .max_size(config.pool_size)
            .wait_timeout(Some(Duration::from_secs(30)))
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .build()
            .map_err(|e| StoreError::Backend(format!("PostgreSQL connection pool: {e}")))?;
        {
            let mut client = pool.get().await.map_err(pool_error)?;
            schema::migrate(&mut client).await?;
            let released = client
                .execute(
                    "UPDATE recipients SET claimed_by = NULL, lease_until = NULL WHERE claimed_by = $1",
                    &[&config.node],
                )
                .await
                .map_err(pg_error)?;
            if released > 0 {
                info!(node = %config.node, recipients = released, "released this node's claims left by its previous run");
            }
        }
        let writers = (config.pool_size / 2).max(1);
        let inner = Arc::new(Inner {
            writer: writer::Writer::start(pool.clone(), config.node.clone(), writers),
            pool,
            pg,
            tls,
            node: config.node.clone(),
            lease_ms: ms(config.lease),
        });
        tokio::spawn(renew_leases(Arc::downgrade(&inner), config.lease / 4));
        tokio::spawn(counts::keep_folding(Arc::downgrade(&inner)));
        tokio::spawn(reclaim::keep_reclaiming(Arc::downgrade(&inner)));
        tokio::spawn(sweep::keep_sweeping(Arc::downgrade(&inner)));
        Ok(Self { inner })
    }
}
