//! The conformance case for large content: a message committed from a spool file reads
//! back, byte for byte and in bounded chunks, after its trace headers; its size counts
//! both; a refused insert leaves no file; a deleted message's content is gone.

use super::message;
use crate::queue::body::{self, BodyReader};
use crate::queue::spool::{Spool, Spooled};
use crate::queue::{OperatorAction, Store, StoreError};
use std::path::Path;

const HEAD: &[u8] = b"Received: by test\r\n";

/// Content of `len` bytes that differs from chunk to chunk (a misplaced chunk shows).
fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i.wrapping_mul(31) ^ (i >> 12)) as u8 ^ seed)
        .collect()
}

async fn spool(state_dir: &Path, id: &str, content: &[u8]) -> Spooled {
    let mut w = Spool::new(state_dir).create(&id.to_string()).await.unwrap();
    for part in content.chunks(100_000) {
        w.write(part).await.unwrap();
    }
    w.finish().await.unwrap()
}

/// Reads the whole content through `reader`, checking that no read hands out more than
/// one delivery buffer.
async fn read_all(mut reader: BodyReader) -> Vec<u8> {
    let (mut all, mut buf) = (Vec::new(), Vec::new());
    while reader.next_chunk(&mut buf).await.unwrap() {
        assert!(buf.len() <= body::CHUNK);
        all.extend_from_slice(&buf);
    }
    assert_eq!(
        all.len() as u64,
        reader.size,
        "the size the reader announced"
    );
    all
}

/// `state_dir` is the store's state directory (where sessions spool content).
pub async fn spooled_content(s: &dyn Store, state_dir: &Path) {
    // Lengths around the 1 MiB boundaries a store may cut content at, the head included.
    for (id, len, seed) in [
        ("big1", (5 << 20) / 2 + 17, 1u8),
        ("big2", (2 << 20) - HEAD.len(), 2),
        ("big3", (1 << 20) + 1, 3),
    ] {
        let content = pattern(len, seed);
        let file = spool(state_dir, id, &content).await;
        let mut m = message(id, &[("a@x.test", "x.test")]);
        m.body = HEAD.to_vec();
        s.insert_spooled(m, file).await.unwrap();
        let mut expected = HEAD.to_vec();
        expected.extend_from_slice(&content);
        let got = read_all(s.body_reader(id).await.unwrap()).await;
        assert!(got == expected, "{id}: the content came back different");
        assert!(s.body(id).await.unwrap() == expected, "{id}: body()");
        let shown = s.show(id).await.unwrap().unwrap();
        assert_eq!(shown.size, expected.len() as u64, "{id}: size");
    }
    // A small message reads through the same path.
    s.insert(message("small", &[("a@x.test", "x.test")]))
        .await
        .unwrap();
    assert_eq!(
        read_all(s.body_reader("small").await.unwrap()).await,
        s.body("small").await.unwrap()
    );

    // The same id again: refused, and the second file is removed; the first message's
    // content is untouched.
    let dup_file = spool(state_dir, "dup", &pattern(2 << 20, 9)).await;
    let dup_path = dup_file.path.clone();
    let mut dup = message("big1", &[("a@x.test", "x.test")]);
    dup.body = HEAD.to_vec();
    assert!(s.insert_spooled(dup, dup_file).await.is_err());
    assert!(!dup_path.exists(), "a refused insert leaves no file");
    let mut expected = HEAD.to_vec();
    expected.extend_from_slice(&pattern((5 << 20) / 2 + 17, 1));
    assert!(read_all(s.body_reader("big1").await.unwrap()).await == expected);

    // Deleted: the content is gone, its file too.
    assert_eq!(
        s.act(vec!["big1".into()], OperatorAction::Delete, 0)
            .await
            .unwrap(),
        1
    );
    assert!(matches!(
        s.body_reader("big1").await,
        Err(StoreError::NotFound(_))
    ));
    assert!(super::gone_soon(&crate::queue::spool::dir(state_dir).join("big1")).await);
}
