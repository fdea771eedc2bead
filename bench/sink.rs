//! A fast SMTP sink for bench/scale's drains of large messages: Postfix's `smtp-sink` takes
//! only 123–139 MB/s of 50 MiB messages on these machines, too little to tell whether mx2's
//! drain reaches the disk's or the link's speed. This one reads content in 1 MiB reads and
//! looks only at the end of each read for the end of data (`<CRLF>.<CRLF>` cannot occur
//! inside dot-stuffed content, and the client waits for the reply after sending it), so it
//! costs little more than the kernel's copy. It accepts every command and prints the running
//! count of messages taken (`mesg=N` and a carriage return, as `smtp-sink -c` does, which is
//! what bench/scale follows). Loopback only. Built by bench/scale with `rustc -O`.
//!
//! Usage: sink PORT

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 2 {
        eprintln!("usage: sink PORT");
        std::process::exit(2);
    }
    let listener = TcpListener::bind(("127.0.0.1", args[1].parse::<u16>().expect("a port")))
        .expect("cannot listen");
    let taken = Arc::new(Mutex::new(0u64));
    for stream in listener.incoming().flatten() {
        let taken = taken.clone();
        std::thread::spawn(move || {
            let _ = session(stream, &taken);
        });
    }
}

fn session(stream: TcpStream, taken: &Mutex<u64>) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    let mut out = stream.try_clone()?;
    let mut input = BufReader::with_capacity(1 << 20, stream);
    out.write_all(b"220 sink ESMTP\r\n")?;
    let mut line = Vec::new();
    loop {
        line.clear();
        if input.read_until(b'\n', &mut line)? == 0 {
            return Ok(());
        }
        let verb = line
            .iter()
            .take(4)
            .map(u8::to_ascii_uppercase)
            .collect::<Vec<_>>();
        match &verb[..] {
            b"EHLO" => out.write_all(b"250-sink\r\n250-PIPELINING\r\n250-8BITMIME\r\n250 SIZE\r\n")?,
            b"DATA" => {
                out.write_all(b"354 go ahead\r\n")?;
                content(&mut input)?;
                if let Ok(mut n) = taken.lock() {
                    *n += 1;
                    let mut stdout = std::io::stdout().lock();
                    write!(stdout, "mesg={n}\r")?;
                    stdout.flush()?;
                }
                out.write_all(b"250 2.0.0 taken\r\n")?;
            }
            b"QUIT" => {
                out.write_all(b"221 2.0.0 bye\r\n")?;
                return Ok(());
            }
            _ => out.write_all(b"250 2.0.0 ok\r\n")?,
        }
    }
}

/// Reads content up to and including `<CRLF>.<CRLF>`; returns its length in bytes.
fn content(input: &mut BufReader<TcpStream>) -> std::io::Result<u64> {
    let mut total = 0u64;
    let mut tail = [0u8; 5];
    loop {
        let buf = input.fill_buf()?;
        if buf.is_empty() {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        let n = buf.len();
        // The last five bytes of the content so far.
        if n >= 5 {
            tail.copy_from_slice(&buf[n - 5..]);
        } else {
            tail.rotate_left(n);
            tail[5 - n..].copy_from_slice(buf);
        }
        input.consume(n);
        total += n as u64;
        if &tail == b"\r\n.\r\n" || (total == 3 && &tail[2..] == b".\r\n") {
            return Ok(total);
        }
    }
}
