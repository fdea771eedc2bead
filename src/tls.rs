//! TLS for both directions: the server certificate (loaded from PEM files, reloaded when they
//! change or on SIGHUP), the client policies for delivery (opportunistic, required, verify,
//! optional SHA-256 pin, DANE's TLSA records), and a stream type that is plain TCP or TLS.
//! ring is the crypto provider.

use crate::config::{TlsMode, TlsPolicy};
use crate::delivery::dane::{self, Tlsa};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{DigitallySignedStruct, SignatureScheme};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};
use std::time::SystemTime;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

// ---- the server certificate ------------------------------------------------------------------

/// The certificate and key mx2 presents on STARTTLS, swapped in place on reload.
#[derive(Debug)]
pub struct ServerCert {
    cert_path: PathBuf,
    key_path: PathBuf,
    current: RwLock<(Arc<CertifiedKey>, Option<SystemTime>)>,
}

fn mtime(p: &Path) -> Option<SystemTime> {
    std::fs::metadata(p).and_then(|m| m.modified()).ok()
}

fn load_key_pair(cert: &Path, key: &Path) -> Result<CertifiedKey, String> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| format!("{}: cannot read the certificate: {e}", cert.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{}: bad PEM certificate: {e}", cert.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: no certificate in the file", cert.display()));
    }
    let der = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| format!("{}: cannot read the private key: {e}", key.display()))?;
    let signing = rustls::crypto::ring::sign::any_supported_type(&der)
        .map_err(|e| format!("{}: unsupported private key: {e}", key.display()))?;
    let ck = CertifiedKey::new(certs, signing);
    ck.keys_match().map_err(|e| {
        format!(
            "{} and {} do not belong together: {e}",
            cert.display(),
            key.display()
        )
    })?;
    Ok(ck)
}

impl ServerCert {
    pub fn load(cert_path: &Path, key_path: &Path) -> Result<Arc<Self>, String> {
        let ck = load_key_pair(cert_path, key_path)?;
        Ok(Arc::new(Self {
            cert_path: cert_path.to_path_buf(),
            key_path: key_path.to_path_buf(),
            current: RwLock::new((Arc::new(ck), newest(cert_path, key_path))),
        }))
    }

    /// Reloads the files; on error the old certificate stays in use.
    pub fn reload(&self) -> Result<(), String> {
        let ck = load_key_pair(&self.cert_path, &self.key_path)?;
        let mut cur = self.current.write().unwrap_or_else(|p| p.into_inner());
        *cur = (Arc::new(ck), newest(&self.cert_path, &self.key_path));
        Ok(())
    }

    /// Reloads when either file changed since the last load; true when it did.
    pub fn reload_if_changed(&self) -> Result<bool, String> {
        let seen = self.current.read().unwrap_or_else(|p| p.into_inner()).1;
        if newest(&self.cert_path, &self.key_path) == seen {
            return Ok(false);
        }
        self.reload().map(|()| true)
    }

    pub fn acceptor(self: &Arc<Self>) -> Result<tokio_rustls::TlsAcceptor, String> {
        let config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_no_client_auth()
            .with_cert_resolver(self.clone());
        Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
    }
}

fn newest(a: &Path, b: &Path) -> Option<SystemTime> {
    mtime(a).max(mtime(b))
}

impl ResolvesServerCert for ServerCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.current
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .0
                .clone(),
        )
    }
}

// ---- client policies -----------------------------------------------------------------------------

/// A ready-to-use client side of a [`TlsPolicy`].
#[derive(Clone)]
pub struct ClientTls {
    pub mode: TlsMode,
    connector: tokio_rustls::TlsConnector,
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ClientTls({:?})", self.mode)
    }
}

impl ClientTls {
    pub fn new(policy: &TlsPolicy) -> Result<Self, String> {
        Ok(Self {
            mode: policy.mode,
            connector: tokio_rustls::TlsConnector::from(Arc::new(client_config(policy)?)),
        })
    }
}

/// The rustls client configuration for a policy: which certificates it accepts (any, or valid
/// for the name against the Mozilla roots and `ca_file`) and the optional pin. Also used for
/// the connection to PostgreSQL.
pub fn client_config(policy: &TlsPolicy) -> Result<rustls::ClientConfig, String> {
    let p = provider();
    let inner: Arc<dyn ServerCertVerifier> = if policy.mode == TlsMode::Verify {
        let mut roots = rustls::RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        if let Some(ca) = &policy.ca_file {
            let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(ca)
                .map_err(|e| format!("{}: cannot read CA file: {e}", ca.display()))?
                .collect::<Result<_, _>>()
                .map_err(|e| format!("{}: bad PEM in CA file: {e}", ca.display()))?;
            let (added, _) = roots.add_parsable_certificates(certs);
            if added == 0 {
                return Err(format!("{}: no usable CA certificate", ca.display()));
            }
        }
        rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), p.clone())
            .build()
            .map_err(|e| e.to_string())?
    } else {
        Arc::new(AnyCert(p.clone()))
    };
    let verifier: Arc<dyn ServerCertVerifier> = match policy.pin {
        Some(pin) => Arc::new(Pinned { inner, pin }),
        None => inner,
    };
    let config = rustls::ClientConfig::builder_with_provider(p)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    Ok(config)
}

impl ClientTls {
    /// The client side of DANE for one host (`host` as logs show it): the certificate must
    /// match one of `records` (usable TLSA records) — a DANE-EE record directly, a DANE-TA
    /// record through a chain valid for one of `names`.
    pub fn dane(records: &[Tlsa], names: &[String], host: &str) -> Result<Self, String> {
        let p = provider();
        let verifier = Arc::new(DaneVerifier {
            records: records.to_vec(),
            names: names.to_vec(),
            host: host.to_string(),
            provider: p.clone(),
        });
        let config = rustls::ClientConfig::builder_with_provider(p)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth();
        Ok(Self {
            mode: TlsMode::Dane,
            connector: tokio_rustls::TlsConnector::from(Arc::new(config)),
        })
    }

    pub async fn connect(
        &self,
        name: &str,
        tcp: TcpStream,
    ) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
        let server_name = match name.parse::<std::net::IpAddr>() {
            Ok(ip) => ServerName::IpAddress(ip.into()),
            Err(_) => ServerName::try_from(name.to_string())
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?,
        };
        self.connector.connect(server_name, tcp).await
    }
}

/// Why a handshake failed, in words: a verifier's own reason (DANE's) as it gave it.
pub fn handshake_failure(e: &std::io::Error) -> String {
    match e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    {
        Some(rustls::Error::General(reason)) => reason.clone(),
        _ => e.to_string(),
    }
}

/// Checks a certificate chain (end entity first) against usable TLSA records as DANE does
/// (RFC 7672 §3): Ok, or the reason, starting "DANE: " and naming `host`.
pub fn verify_dane(
    records: &[Tlsa],
    chain: &[&[u8]],
    names: &[String],
    host: &str,
    now: UnixTime,
) -> Result<(), String> {
    let Some(ee) = chain.first() else {
        return Err(format!("DANE: {host} presented no certificate"));
    };
    if dane::ee_matches(records, ee) {
        return Ok(());
    }
    let anchors = dane::trust_anchors(records, chain);
    if anchors.is_empty() {
        return Err(format!(
            "DANE: {host} presented a certificate matching no TLSA record"
        ));
    }
    let ee = CertificateDer::from(ee.to_vec());
    let intermediates: Vec<CertificateDer<'_>> = chain[1..]
        .iter()
        .map(|c| CertificateDer::from(c.to_vec()))
        .collect();
    let mut last = String::new();
    for anchor in anchors {
        let mut roots = rustls::RootCertStore::empty();
        if roots.add(CertificateDer::from(anchor)).is_err() {
            continue;
        }
        let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
            Arc::new(roots),
            provider(),
        )
        .build()
        .map_err(|e| e.to_string())?;
        for name in names {
            let Ok(server_name) = ServerName::try_from(name.clone()) else {
                continue;
            };
            match verifier.verify_server_cert(&ee, &intermediates, &server_name, &[], now) {
                Ok(_) => return Ok(()),
                Err(e) => last = e.to_string(),
            }
        }
    }
    Err(format!(
        "DANE: {host} presented a certificate that does not chain to its TLSA trust anchor for {}: {last}",
        names.join(" or ")
    ))
}

/// Checks a server certificate chain for `name` against the Mozilla roots and `ca_file`:
/// Ok, or the reason it would be refused.
pub fn verify_chain(chain: &[Vec<u8>], name: &str, ca_file: Option<&Path>) -> Result<(), String> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(ca) = ca_file {
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(ca)
            .map_err(|e| format!("{}: {e}", ca.display()))?
            .collect::<Result<_, _>>()
            .map_err(|e| format!("{}: {e}", ca.display()))?;
        roots.add_parsable_certificates(certs);
    }
    let verifier =
        rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider())
            .build()
            .map_err(|e| e.to_string())?;
    let (ee, rest) = chain.split_first().ok_or("no certificate")?;
    let ee = CertificateDer::from(ee.clone());
    let intermediates: Vec<CertificateDer<'_>> = rest
        .iter()
        .map(|c| CertificateDer::from(c.clone()))
        .collect();
    let server_name = match name.parse::<std::net::IpAddr>() {
        Ok(ip) => ServerName::IpAddress(ip.into()),
        Err(_) => ServerName::try_from(name.to_string()).map_err(|e| e.to_string())?,
    };
    verifier
        .verify_server_cert(&ee, &intermediates, &server_name, &[], UnixTime::now())
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// The handshake-signature half of a [`ServerCertVerifier`] whose `self.$provider` is the
/// crypto provider: signatures are checked as usual, whatever the certificate check is.
macro_rules! handshake_signatures {
    ($provider:tt) => {
        fn verify_tls12_signature(
            &self,
            m: &[u8],
            c: &CertificateDer<'_>,
            d: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls12_signature(
                m,
                c,
                d,
                &self.$provider.signature_verification_algorithms,
            )
        }
        fn verify_tls13_signature(
            &self,
            m: &[u8],
            c: &CertificateDer<'_>,
            d: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls13_signature(
                m,
                c,
                d,
                &self.$provider.signature_verification_algorithms,
            )
        }
        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.$provider
                .signature_verification_algorithms
                .supported_schemes()
        }
    };
}

/// Accepts any certificate (opportunistic and required TLS) but still checks the handshake
/// signatures, so the session is at least bound to the certificate presented.
#[derive(Debug)]
struct AnyCert(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCert {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    handshake_signatures!(0);
}

/// DANE's verifier: the chain must satisfy [`verify_dane`]; handshake signatures are checked
/// as usual, so the session is bound to the certificate that matched.
#[derive(Debug)]
struct DaneVerifier {
    records: Vec<Tlsa>,
    names: Vec<String>,
    host: String,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for DaneVerifier {
    fn verify_server_cert(
        &self,
        ee: &CertificateDer<'_>,
        im: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let chain: Vec<&[u8]> = std::iter::once(ee.as_ref())
            .chain(im.iter().map(|c| c.as_ref()))
            .collect();
        verify_dane(&self.records, &chain, &self.names, &self.host, now)
            .map(|()| ServerCertVerified::assertion())
            .map_err(rustls::Error::General)
    }
    handshake_signatures!(provider);
}

/// Adds a SHA-256 certificate pin to another verifier.
#[derive(Debug)]
struct Pinned {
    inner: Arc<dyn ServerCertVerifier>,
    pin: [u8; 32],
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        ee: &CertificateDer<'_>,
        im: &[CertificateDer<'_>],
        n: &ServerName<'_>,
        o: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let ok = self.inner.verify_server_cert(ee, im, n, o, now)?;
        let digest = ring::digest::digest(&ring::digest::SHA256, ee.as_ref());
        if digest.as_ref() != self.pin {
            return Err(rustls::Error::General(
                "certificate does not match the configured tls_pin".into(),
            ));
        }
        Ok(ok)
    }
    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(m, c, d)
    }
    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(m, c, d)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

// ---- a stream that may be TLS -----------------------------------------------------------------

/// A connection's byte stream: plain TCP, or TLS after STARTTLS (either side).
pub enum Stream {
    Plain(TcpStream),
    Server(Box<tokio_rustls::server::TlsStream<TcpStream>>),
    Client(Box<tokio_rustls::client::TlsStream<TcpStream>>),
    /// Only while switching to TLS.
    Gone,
}

impl Stream {
    /// `TLSv1_3 TLS13_AES_256_GCM_SHA384`, for logs and the Received header.
    pub fn tls_info(&self) -> Option<String> {
        let common: &rustls::CommonState = match self {
            Stream::Server(s) => s.get_ref().1,
            Stream::Client(s) => s.get_ref().1,
            _ => return None,
        };
        let version = common
            .protocol_version()
            .map(|v| format!("{v:?}"))
            .unwrap_or_default();
        let suite = common
            .negotiated_cipher_suite()
            .map(|s| format!("{:?}", s.suite()))
            .unwrap_or_default();
        Some(format!("{version} {suite}"))
    }

    /// Takes the plain TCP stream out to start TLS on it.
    pub fn take_plain(&mut self) -> Option<TcpStream> {
        match std::mem::replace(self, Stream::Gone) {
            Stream::Plain(s) => Some(s),
            other => {
                *self = other;
                None
            }
        }
    }

    pub fn plain(&self) -> Option<&TcpStream> {
        match self {
            Stream::Plain(s) => Some(s),
            _ => None,
        }
    }
}

fn gone() -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::NotConnected,
        "stream is being switched to TLS",
    )
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Server(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            Stream::Client(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            Stream::Gone => Poll::Ready(Err(gone())),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Server(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            Stream::Client(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            Stream::Gone => Poll::Ready(Err(gone())),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Server(s) => Pin::new(s.as_mut()).poll_flush(cx),
            Stream::Client(s) => Pin::new(s.as_mut()).poll_flush(cx),
            Stream::Gone => Poll::Ready(Ok(())),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Server(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            Stream::Client(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            Stream::Gone => Poll::Ready(Ok(())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_pair(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec![name.to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let (c, k) = (dir.join("cert.pem"), dir.join("key.pem"));
        std::fs::write(&c, cert.pem()).unwrap();
        std::fs::write(&k, key.serialize_pem()).unwrap();
        (c, k)
    }

    fn current_der(s: &ServerCert) -> Vec<u8> {
        s.current.read().unwrap().0.cert[0].as_ref().to_vec()
    }

    #[test]
    fn dane_ee_ignores_name_and_expiry_dane_ta_checks_the_chain_and_name() {
        use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = CertifiedIssuer::self_signed(p, KeyPair::generate().unwrap()).unwrap();
        let mut expired = CertificateParams::new(vec!["elsewhere.test".to_string()]).unwrap();
        expired.not_before = rcgen::date_time_ymd(2020, 1, 1);
        expired.not_after = rcgen::date_time_ymd(2021, 1, 1);
        let ee = CertificateParams::new(vec!["mx.example.test".to_string()])
            .unwrap()
            .signed_by(&KeyPair::generate().unwrap(), &ca)
            .unwrap()
            .der()
            .to_vec();
        let old = expired
            .signed_by(&KeyPair::generate().unwrap(), &ca)
            .unwrap()
            .der()
            .to_vec();
        let ca_der = ca.der().to_vec();
        let sha = |b: &[u8]| {
            ring::digest::digest(&ring::digest::SHA256, b)
                .as_ref()
                .to_vec()
        };
        let rec = |usage, data| Tlsa {
            usage,
            selector: 0,
            matching: 1,
            data,
        };
        let names = vec!["mx.example.test".to_string(), "example.test".to_string()];
        let now = UnixTime::now();
        // DANE-EE: an expired certificate for another name still matches (RFC 7672 §3.1.1).
        let ee_rec = [rec(3, sha(&old))];
        assert!(verify_dane(&ee_rec, &[&old], &names, "h", now).is_ok());
        let e = verify_dane(&ee_rec, &[&ee], &names, "h", now).unwrap_err();
        assert_eq!(e, "DANE: h presented a certificate matching no TLSA record");
        // DANE-TA: the chain must lead to the named anchor and name the host.
        let ta = [rec(2, sha(&ca_der))];
        assert!(verify_dane(&ta, &[&ee, &ca_der], &names, "h", now).is_ok());
        let e = verify_dane(&ta, &[&ee, &ca_der], &["other.test".into()], "h", now).unwrap_err();
        assert!(
            e.starts_with("DANE: h presented a certificate that does not chain"),
            "{e}"
        );
        let e = verify_dane(&ta, &[&old, &ca_der], &names, "h", now).unwrap_err();
        assert!(e.contains("does not chain"), "expired under DANE-TA: {e}");
        let e = verify_dane(&ta, &[&ee], &names, "h", now).unwrap_err();
        assert!(e.contains("matching no TLSA record"), "{e}");
        assert!(verify_dane(&ta, &[], &names, "h", now).is_err());
    }

    #[test]
    fn certificate_reloads_when_the_files_change_and_survives_bad_ones() {
        let dir = tempfile::tempdir().unwrap();
        let (c, k) = write_pair(dir.path(), "one.test");
        let s = ServerCert::load(&c, &k).unwrap();
        let first = current_der(&s);
        assert!(!s.reload_if_changed().unwrap(), "nothing changed yet");
        std::thread::sleep(std::time::Duration::from_millis(20));
        write_pair(dir.path(), "two.test");
        assert!(s.reload_if_changed().unwrap());
        assert_ne!(current_der(&s), first);
        let second = current_der(&s);
        std::fs::write(&c, "not a certificate").unwrap();
        assert!(s.reload().is_err());
        assert_eq!(
            current_der(&s),
            second,
            "a broken file leaves the old certificate in use"
        );
        assert!(
            ServerCert::load(&dir.path().join("missing.pem"), &k)
                .unwrap_err()
                .contains("missing.pem")
        );
    }
}
