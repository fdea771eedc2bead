//! A tiny authoritative DNS server for tests (UDP on 127.0.0.1), built on hickory-proto's
//! message encoding. It serves every name as one DNSSEC-signed root zone (RRSIGs, DNSKEY,
//! NSEC denials, see `dns_zone`), whose key the tests hand to mx2 as its trust anchor
//! ([`DnsServer::table`]); names under an unsigned delegation ([`DnsServer::start_with`]) are
//! served unsigned, the delegation proven insecure by a signed NSEC at its apex. Unknown names
//! get NXDOMAIN.

use super::dns_zone::{Signer, Zone};
use hickory_proto::op::{Edns, Message, MessageType, OpCode};
use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

/// A record to serve.
#[derive(Clone, Debug)]
pub enum Rec {
    Mx(u16, &'static str),
    /// `MX 0 .` (RFC 7505).
    NullMx,
    Ip(&'static str),
    Txt(&'static str),
    Cname(&'static str),
    /// Owner is the reversed name, e.g. `2.0.0.127.in-addr.arpa`.
    Ptr(&'static str),
    /// TLSA: usage, selector, matching type, data. Owner e.g. `_25._tcp.mx.example.test`.
    Tlsa(u8, u8, u8, Vec<u8>),
    /// Every query for the owner fails with SERVFAIL (a broken zone).
    ServFail,
}

pub struct DnsServer {
    pub addr: SocketAddr,
    /// The zone's key as a trust anchor file (a DNSKEY line for the root).
    pub anchor: PathBuf,
    zone: Arc<Mutex<Zone>>,
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

pub(super) fn key(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

impl DnsServer {
    /// Serves `records`: (owner name, record), all signed.
    pub fn start(records: &[(&str, Rec)]) -> DnsServer {
        Self::start_with(records, &[])
    }

    /// Serves `records`; names at and under each of `unsigned` (zone apexes such as
    /// `plain.test`) are an unsigned zone delegated from the signed root.
    pub fn start_with(records: &[(&str, Rec)], unsigned: &[&str]) -> DnsServer {
        let mut names: HashMap<String, Vec<Rec>> = HashMap::new();
        for (name, rec) in records {
            names.entry(key(name)).or_default().push(rec.clone());
        }
        let signer = Signer::generate();
        let dir = tempfile::tempdir().unwrap();
        let anchor = dir.path().join("anchor.txt");
        std::fs::write(&anchor, signer.anchor_line()).unwrap();
        let zone = Arc::new(Mutex::new(Zone {
            names,
            unsigned: unsigned.iter().map(|u| key(u)).collect(),
            signer,
        }));
        let served = zone.clone();
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let addr = socket.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let s2 = stop.clone();
        let thread = thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while !s2.load(Ordering::SeqCst) {
                let Ok((n, peer)) = socket.recv_from(&mut buf) else {
                    continue;
                };
                let reply = answer(&served.lock().unwrap(), &buf[..n]);
                if let Some(reply) = reply {
                    let _ = socket.send_to(&reply, peer);
                }
            }
        });
        DnsServer {
            addr,
            anchor,
            zone,
            stop,
            thread: Some(thread),
            _dir: dir,
        }
    }

    /// Serves one more record from now on (a record published while the test runs).
    pub fn add(&self, name: &str, rec: Rec) {
        self.zone
            .lock()
            .unwrap()
            .names
            .entry(key(name))
            .or_default()
            .push(rec);
    }

    /// The `[dns]` table for mx2: this server, its key as the DNSSEC trust anchor. More
    /// `[dns]` keys may follow it.
    pub fn table(&self) -> String {
        format!(
            "[dns]\nnameservers = [\"{}\"]\ndnssec_trust_anchor = \"{}\"\n",
            self.addr,
            self.anchor.display()
        )
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn answer(zone: &Zone, query: &[u8]) -> Option<Vec<u8>> {
    let q = Message::from_vec(query).ok()?;
    let question = q.queries.first()?.clone();
    let mut m = Message::new(q.metadata.id, MessageType::Response, OpCode::Query);
    m.metadata.authoritative = true;
    m.metadata.recursion_desired = q.metadata.recursion_desired;
    m.metadata.recursion_available = true;
    if q.edns.is_some() {
        let mut edns = Edns::new();
        edns.set_max_payload(4096).set_dnssec_ok(true);
        m.set_edns(edns);
    }
    m.add_query(question.clone());
    zone.answer(question.name(), question.query_type(), &mut m)?;
    m.to_vec().ok()
}
