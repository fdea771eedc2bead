//! Inbound SMTP: the listener (accept, limits, timeouts, I/O), the framing of a connection
//! (`conn`), the session state machine (which decides and phrases every reply), and the
//! DATA/BDAT content path (`receive`, `data`). Asks `policy` for decisions and commits to
//! `queue`.

mod conn;
pub mod data;
pub mod limits;
pub mod listener;
pub mod proxy;
mod receive;
pub mod received;
pub mod session;
