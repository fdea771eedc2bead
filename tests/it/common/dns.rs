//! A tiny authoritative DNS server for tests (UDP on 127.0.0.1), built on hickory-proto's
//! message encoding. Zones are given as simple records; unknown names get NXDOMAIN.

use hickory_proto::op::{Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, CNAME, MX, PTR, TXT};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr, UdpSocket};
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
    /// Every query for the owner fails with SERVFAIL (a broken zone).
    ServFail,
}

pub struct DnsServer {
    pub addr: SocketAddr,
    zone: Arc<Mutex<HashMap<String, Vec<Rec>>>>,
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
}

fn key(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

impl DnsServer {
    /// Serves `records`: (owner name, record).
    pub fn start(records: &[(&str, Rec)]) -> DnsServer {
        let mut zone: HashMap<String, Vec<Rec>> = HashMap::new();
        for (name, rec) in records {
            zone.entry(key(name)).or_default().push(rec.clone());
        }
        let zone = Arc::new(Mutex::new(zone));
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
            zone,
            stop,
            thread: Some(thread),
        }
    }
}

impl DnsServer {
    /// Serves one more record from now on (a record published while the test runs).
    pub fn add(&self, name: &str, rec: Rec) {
        self.zone
            .lock()
            .unwrap()
            .entry(key(name))
            .or_default()
            .push(rec);
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

fn answer(zone: &HashMap<String, Vec<Rec>>, query: &[u8]) -> Option<Vec<u8>> {
    let q = Message::from_vec(query).ok()?;
    let question = q.queries.first()?.clone();
    let mut m = Message::new(q.metadata.id, MessageType::Response, OpCode::Query);
    m.metadata.authoritative = true;
    m.metadata.recursion_desired = q.metadata.recursion_desired;
    m.metadata.recursion_available = true;
    m.add_query(question.clone());
    let name = question.name().clone();
    match zone.get(&key(&name.to_ascii())) {
        None => m.metadata.response_code = ResponseCode::NXDomain,
        Some(recs) if recs.iter().any(|r| matches!(r, Rec::ServFail)) => {
            m.metadata.response_code = ResponseCode::ServFail;
        }
        Some(recs) => {
            for r in recs {
                let data = match (r, question.query_type()) {
                    (Rec::Mx(p, host), RecordType::MX) => {
                        RData::MX(MX::new(*p, Name::from_ascii(format!("{host}.")).ok()?))
                    }
                    (Rec::NullMx, RecordType::MX) => RData::MX(MX::new(0, Name::root())),
                    (Rec::Txt(t), RecordType::TXT) => RData::TXT(TXT::new(vec![t.to_string()])),
                    (Rec::Cname(t), _) => {
                        RData::CNAME(CNAME(Name::from_ascii(format!("{t}.")).ok()?))
                    }
                    (Rec::Ptr(t), RecordType::PTR) => {
                        RData::PTR(PTR(Name::from_ascii(format!("{t}.")).ok()?))
                    }
                    (Rec::Ip(ip), t) => match (ip.parse::<IpAddr>().ok()?, t) {
                        (IpAddr::V4(v4), RecordType::A) => RData::A(A(v4)),
                        (IpAddr::V6(v6), RecordType::AAAA) => RData::AAAA(AAAA(v6)),
                        _ => continue,
                    },
                    _ => continue,
                };
                m.add_answer(Record::from_rdata(name.clone(), 60, data));
            }
        }
    }
    m.to_vec().ok()
}
