//! Inbound SMTP: the listener (accept, limits, timeouts, I/O), the framing of a connection
//! (`conn`), the session state machine (which decides and phrases every reply), and the
//! DATA/BDAT content path (`receive`, `data`, `spooling`). Asks `policy` for decisions and commits to
//! `queue`.

mod conn;
pub mod data;
pub mod limits;
pub mod listener;
pub mod proxy;
mod receive;
pub mod received;
pub mod session;
pub mod spooling;

/// Starting delivery on request: what ETRN needs (the admin API's flush uses it too).
/// Inbound owns the trait, as its consumer; the scheduler implements it, so inbound never
/// depends on the scheduler.
pub trait Flusher: Send + Sync {
    /// Makes everything held for these domains due now, treats their primaries as up, and
    /// returns how many recipients are pending for them.
    fn flush(
        &self,
        domains: Vec<String>,
    ) -> std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<u64, crate::queue::StoreError>> + Send + '_>,
    >;
}
