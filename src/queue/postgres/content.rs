//! A message's content in the `bodies` table, in and out as a stream: a spooled message's
//! content goes from its spool file into chunk rows of [`CHUNK`] bytes one at a time, inside
//! the transaction that commits the message; a delivery reads it back one chunk row at a
//! time, from the second row on the next one fetched (by a task of its own, on a pooled
//! connection taken for that one query) while the last is sent. Receiving holds one chunk of a message, delivering
//! two.

use super::{CHUNK, pg_error, pool_error};
use crate::queue::body::BodyReader;
use crate::queue::spool::Spooled;
use crate::queue::{NewMessage, StoreError};
use deadpool_postgres::{Pool, Transaction};
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncReadExt, ReadBuf};

/// Schema step 13: chunk rows are stored out of line without compression. Most of a large
/// message is base64 of data already compressed (images, archives, PDFs), which pglz works
/// through to the end of every 1 MiB chunk before giving up: a third of the server's CPU
/// time while 50 MB messages came in (BENCHMARKS.md, 2026-12-03 08:15). Text that would
/// compress takes its full size, for as long as the queue holds it (decision 50). Rows
/// written before keep their form.
pub(super) const UNCOMPRESSED: &str = "ALTER TABLE bodies ALTER COLUMN chunk SET STORAGE EXTERNAL;";

/// The content's length of a spooled message: its trace headers, then the file.
pub(super) fn spooled_len(m: &NewMessage, s: &Spooled) -> u64 {
    m.body.len() as u64 + s.len
}

/// Writes the chunk rows of a message whose content is `m.body` followed by the spool
/// file `s`, reading the file [`CHUNK`] bytes at a time. Fails if the file does not hold
/// `s.len` bytes (the envelope already says how long the content is).
pub(super) async fn insert_spooled(
    tx: &Transaction<'_>,
    m: &NewMessage,
    s: &Spooled,
) -> Result<(), StoreError> {
    let unreadable = |e: io::Error| {
        StoreError::Backend(format!(
            "cannot read the spooled content of message {} ({}): {e}",
            m.id,
            s.path.display()
        ))
    };
    let mut file = tokio::fs::File::open(&s.path).await.map_err(unreadable)?;
    let st = tx
        .prepare_cached("INSERT INTO bodies (message_id, seq, chunk) VALUES ($1, $2, $3)")
        .await
        .map_err(pg_error)?;
    let mut head: &[u8] = &m.body;
    let mut buf = vec![0u8; CHUNK];
    let (mut seq, mut total) = (0i32, 0u64);
    loop {
        let n = fill(&mut head, &mut file, &mut buf)
            .await
            .map_err(unreadable)?;
        if n == 0 {
            break;
        }
        total += n as u64;
        tx.execute(&st, &[&m.id, &seq, &&buf[..n]])
            .await
            .map_err(pg_error)?;
        seq += 1;
        if n < CHUNK {
            break;
        }
    }
    let expected = spooled_len(m, s);
    if total != expected {
        return Err(StoreError::Backend(format!(
            "the spooled content of message {} ({}) holds {total} bytes, {expected} expected",
            m.id,
            s.path.display()
        )));
    }
    Ok(())
}

/// Fills `buf` from `head` (advanced past what it gave), then from `file`, until it is full
/// or both are used up; returns how many bytes it holds.
async fn fill(
    head: &mut &[u8],
    file: &mut (impl AsyncRead + Unpin),
    buf: &mut [u8],
) -> io::Result<usize> {
    let from_head = head.len().min(buf.len());
    buf[..from_head].copy_from_slice(&head[..from_head]);
    *head = &head[from_head..];
    let mut filled = from_head;
    while filled < buf.len() {
        match file.read(&mut buf[filled..]).await? {
            0 => break,
            n => filled += n,
        }
    }
    Ok(filled)
}

/// A stored message's content as a stream of its chunk rows; `NotFound` when the message
/// is not in the queue.
pub(super) async fn reader(pool: Pool, id: String) -> Result<BodyReader, StoreError> {
    let client = pool.get().await.map_err(pool_error)?;
    let st = client
        .prepare_cached("SELECT size, chunks FROM messages WHERE id = $1")
        .await
        .map_err(pg_error)?;
    let row = client
        .query_opt(&st, &[&id])
        .await
        .map_err(pg_error)?
        .ok_or_else(|| StoreError::NotFound(id.clone()))?;
    let size: i64 = row.try_get(0).map_err(pg_error)?;
    let chunks: i32 = row.try_get(1).map_err(pg_error)?;
    drop(client);
    let size = u64::try_from(size).unwrap_or(0);
    Ok(BodyReader::new(
        size,
        Chunks {
            pool,
            id,
            size,
            chunks,
            next: 0,
            read: 0,
            current: Vec::new(),
            at: 0,
            fetching: None,
        },
    ))
}

/// A chunk row being fetched, by a task of its own so that it goes on while the caller
/// sends the chunk before it.
type Fetch = tokio::task::JoinHandle<io::Result<Vec<u8>>>;

/// Reads chunk rows in order, one row ahead from the second row on: as a chunk is handed
/// out, the next one is already being fetched (at most two chunks held per reader).
struct Chunks {
    pool: Pool,
    id: String,
    size: u64,
    chunks: i32,
    /// The next chunk row to fetch.
    next: i32,
    /// Bytes fetched so far.
    read: u64,
    current: Vec<u8>,
    at: usize,
    fetching: Option<Fetch>,
}

/// One chunk row. Bodies never change once stored: a row missing means the message was
/// deleted meanwhile (or the table damaged).
async fn fetch(pool: Pool, id: String, seq: i32) -> io::Result<Vec<u8>> {
    let failed = |e: StoreError| io::Error::other(e.to_string());
    let client = pool.get().await.map_err(|e| failed(pool_error(e)))?;
    let st = client
        .prepare_cached("SELECT chunk FROM bodies WHERE message_id = $1 AND seq = $2")
        .await
        .map_err(|e| failed(pg_error(e)))?;
    let row = client
        .query_opt(&st, &[&id, &seq])
        .await
        .map_err(|e| failed(pg_error(e)))?
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!(
                    "message {id}: content chunk {seq} is not in the queue (deleted while read?)"
                ),
            )
        })?;
    row.try_get(0).map_err(|e| failed(pg_error(e)))
}

impl Chunks {
    /// Starts fetching row `next`.
    fn fetch_next(&self) -> Fetch {
        tokio::spawn(fetch(self.pool.clone(), self.id.clone(), self.next))
    }
}

impl Drop for Chunks {
    fn drop(&mut self) {
        if let Some(f) = self.fetching.take() {
            f.abort();
        }
    }
}

impl AsyncRead for Chunks {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        loop {
            if this.at < this.current.len() {
                let n = out.remaining().min(this.current.len() - this.at);
                out.put_slice(&this.current[this.at..this.at + n]);
                this.at += n;
                return Poll::Ready(Ok(()));
            }
            if this.fetching.is_none() && this.next >= this.chunks {
                if this.read != this.size {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!(
                            "message {}: {} bytes of content stored, {} expected",
                            this.id, this.read, this.size
                        ),
                    )));
                }
                return Poll::Ready(Ok(()));
            }
            let mut f = match this.fetching.take() {
                Some(f) => f,
                None => this.fetch_next(),
            };
            let Poll::Ready(chunk) = Pin::new(&mut f).poll(cx) else {
                this.fetching = Some(f);
                return Poll::Pending;
            };
            let chunk = chunk.map_err(io::Error::other)??;
            this.next += 1;
            this.read += chunk.len() as u64;
            this.current = chunk;
            this.at = 0;
            // Read ahead from the second row on: a reader that wants only the start (a
            // notification's quote, the inbox's list) never asks for a row it drops.
            if this.next >= 2 && this.next < this.chunks {
                this.fetching = Some(this.fetch_next());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn chunks_are_filled_from_the_head_then_the_file() {
        let mut head: &[u8] = b"Received: x\r\n";
        let file_content: Vec<u8> = (0..25u8).collect();
        let mut file: &[u8] = &file_content;
        let mut buf = [0u8; 10];
        let mut got = Vec::new();
        loop {
            let n = fill(&mut head, &mut file, &mut buf).await.unwrap();
            got.push(buf[..n].to_vec());
            if n < buf.len() {
                break;
            }
        }
        let lens: Vec<usize> = got.iter().map(Vec::len).collect();
        assert_eq!(lens, [10, 10, 10, 8]);
        let mut expected = b"Received: x\r\n".to_vec();
        expected.extend_from_slice(&file_content);
        assert_eq!(got.concat(), expected);
    }
}
