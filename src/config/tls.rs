//! The `[tls]` table: the certificate and key offered to clients with STARTTLS. Paths only:
//! the files are loaded (and reloaded) by the TLS code; this file only warns when the key is
//! readable by other users. A domain's outbound TLS policy is in `domain.rs`.

use super::Ctx;
use serde::Deserialize;
use std::path::PathBuf;

#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTls {
    cert: String,
    key: String,
}

impl Ctx<'_> {
    pub(super) fn tls(&self, raw: Option<RawTls>) -> Option<TlsFiles> {
        let tls = raw.map(|t| TlsFiles {
            cert: self.resolve(t.cert),
            key: self.resolve(t.key),
        });
        if let Some(t) = &tls {
            self.secret_file(Err("tls.key"), &t.key);
        }
        tls
    }
}
