//! SMTP syntax shared by the server and the client: commands, replies and addresses.
//! Pure parsing and formatting; no I/O. (mx2's own parsers: they keep the raw ESMTP parameter
//! text that must be relayed verbatim; docs/decisions.md, 1.)

pub mod address;
pub mod command;
pub mod reply;

pub use address::{AddressError, Mailbox, ReversePath};
pub use command::{Command, CommandError, Param};
pub use reply::Reply;
