//! Inbound SMTP: the listener (accept, limits, timeouts, I/O), the session state machine, and
//! the DATA/BDAT content reader. Asks `policy` for decisions and commits to `queue`.

pub mod data;
pub mod limits;
pub mod listener;
pub mod proxy;
pub mod received;
pub mod session;
