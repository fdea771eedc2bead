//! mx2: a secondary MX. Accepts mail for the domains it backs up, keeps it durably, and hands it
//! to each domain's primary the moment the primary can take it. ARCHITECTURE.md at the
//! repository root draws the pipeline and says what each module owns.

pub mod admin;
pub mod check;
pub mod cli;
pub mod config;
pub mod date;
pub mod delivery;
pub mod dns;
pub mod download;
pub mod drill;
pub mod dsn;
pub mod events;
pub mod http;
pub mod inbound;
pub mod inbox;
pub mod limits;
pub mod memory;
pub mod metrics;
pub mod net;
pub mod notice;
pub mod policy;
pub mod queue;
pub mod registry;
pub mod scheduler;
pub mod server;
pub mod shutdown;
pub mod smtp;
pub mod tasks;
pub mod tls;
pub mod tlsrpt;
