//! What a hostile client on the LAN does, kept small and on loopback:
//! sockets from a chosen loopback address (127.0.0.0/8 gives a test many
//! "machines"), silent sockets and half-sent HTTP/2 prefaces, and a raw
//! HTTP/2 client that opens streams with a huge window and never reads.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

pub const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// A TCP connection to `addr` from the loopback address `from`.
pub async fn connect_from(from: &str, addr: &str) -> std::io::Result<TcpStream> {
    let ip: IpAddr = from.parse().expect("a loopback address");
    let sock = TcpSocket::new_v4()?;
    sock.bind(SocketAddr::new(ip, 0))?;
    sock.connect(addr.parse().expect("host:port")).await
}

/// How a silent socket behaves after connecting.
#[derive(Clone, Copy, Debug)]
pub enum Silent {
    /// Sends nothing.
    Nothing,
    /// Half of the HTTP/2 preface.
    HalfPreface,
    /// The whole preface and a SETTINGS frame, then nothing.
    Preface,
}

/// Opens `n` silent sockets from `from`, cycling through the behaviours.
/// Sockets the server refuses at once are still returned (closed).
pub async fn silent_sockets(from: &str, addr: &str, n: usize) -> Vec<TcpStream> {
    let kinds = [Silent::Nothing, Silent::HalfPreface, Silent::Preface];
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let Ok(mut s) = connect_from(from, addr).await else {
            continue;
        };
        match kinds[i % kinds.len()] {
            Silent::Nothing => {}
            Silent::HalfPreface => {
                let _ = s.write_all(&H2_PREFACE[..10]).await;
            }
            Silent::Preface => {
                let _ = s.write_all(H2_PREFACE).await;
                let _ = s.write_all(&frame(4, 0, 0, &[])).await;
            }
        }
        out.push(s);
    }
    out
}

/// Whether the server has closed `s` (EOF or reset) within `wait`. Bytes
/// the server sent first (an HTTP/2 SETTINGS or GOAWAY) are skipped.
pub async fn closed_by_server(s: &mut TcpStream, wait: Duration) -> bool {
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
        }
    }
}

/// A connection whose receive buffer stays small (setting it turns the
/// kernel's autotuning off), so what the server sends and the client does
/// not read piles up at the server, not in the client's kernel.
async fn connect_small_window(addr: &str) -> TcpStream {
    let sock = TcpSocket::new_v4().expect("socket");
    sock.set_recv_buffer_size(16 * 1024).expect("SO_RCVBUF");
    sock.connect(addr.parse().expect("host:port"))
        .await
        .expect("connect")
}

/// One HTTP/2 frame.
pub fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// An HPACK string literal (no Huffman coding), lengths under 127.
fn hpack_str(s: &str) -> Vec<u8> {
    assert!(s.len() < 127);
    let mut v = vec![s.len() as u8];
    v.extend_from_slice(s.as_bytes());
    v
}

/// Opens an HTTP/2 connection that offers the largest window there is
/// and asks for `path` on `streams` streams, then never reads a byte.
pub async fn h2_never_reading(addr: &str, path: &str, streams: u32) -> TcpStream {
    let mut s = connect_small_window(addr).await;
    let mut out = H2_PREFACE.to_vec();
    // SETTINGS: INITIAL_WINDOW_SIZE = 2^31-1.
    out.extend(frame(4, 0, 0, &[0, 4, 0x7f, 0xff, 0xff, 0xff]));
    // The connection window too.
    out.extend(frame(8, 0, 0, &(0x7fff_ffffu32 - 65_535).to_be_bytes()));
    // Acknowledge the server's SETTINGS without reading them.
    out.extend(frame(4, 1, 0, &[]));
    for i in 0..streams {
        let mut block = vec![0x82, 0x86]; // :method GET, :scheme http
        block.push(0x04); // :path, literal without indexing
        block.extend(hpack_str(path));
        block.push(0x01); // :authority
        block.extend(hpack_str(addr));
        // END_STREAM | END_HEADERS on stream 2i+1.
        out.extend(frame(1, 0x5, 2 * i + 1, &block));
    }
    s.write_all(&out).await.expect("write the requests");
    s
}

/// HTTP/1.1 GETs of `path` on `n` connections that never read the answer.
pub async fn h1_never_reading(addr: &str, path: &str, n: usize) -> Vec<TcpStream> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let mut s = connect_small_window(addr).await;
        let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n");
        s.write_all(req.as_bytes()).await.expect("write");
        out.push(s);
    }
    out
}

/// Sends `request` (raw bytes: the request line, headers and any body) on
/// a fresh connection and returns what comes back until the server closes
/// it, it has answered a whole head and `Connection: close` was asked, or
/// `wait` passes.
pub async fn raw_exchange(addr: &str, request: &[u8], wait: Duration) -> String {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(request).await.expect("write");
    let mut got = Vec::new();
    let mut buf = [0u8; 8192];
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => got.extend_from_slice(&buf[..n]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&got).into_owned()
}

/// The status code of a raw answer, 0 if there is none.
pub fn raw_status(answer: &str) -> u16 {
    answer
        .strip_prefix("HTTP/1.1 ")
        .and_then(|r| r.get(..3))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}
