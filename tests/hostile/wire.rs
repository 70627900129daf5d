//! Raw HTTP/1.x over a `TcpStream`, for requests no HTTP client would send:
//! the bytes of a case go out in timed steps (malformed framing, trickled
//! heads and bodies, half-closes), and everything the server writes is read
//! until it closes the connection, then split into responses.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// One step of what a client sends.
#[derive(Clone, Debug)]
pub enum Step {
    Send(Vec<u8>),
    Pause(Duration),
    /// One byte every `every`, for as long as the server reads them.
    Trickle {
        bytes: Vec<u8>,
        every: Duration,
    },
    /// Shut the write side: the server reads end-of-stream.
    HalfClose,
}

/// One response as parsed from the wire.
#[derive(Clone, Debug)]
pub struct Response {
    pub status: u16,
    /// Names lowercased, in order.
    pub headers: Vec<(String, Vec<u8>)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_slice())
    }
}

/// How the connection ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum End {
    /// The server closed it (FIN).
    Closed,
    /// The server reset it (it closed with unread request bytes).
    Reset,
    /// Still open at the deadline: the server neither answered nor closed.
    Open,
}

/// Everything that happened on one connection.
#[derive(Debug)]
pub struct Exchange {
    pub responses: Vec<Response>,
    /// Bytes after the last complete response (a truncated or garbled one).
    pub leftover: Vec<u8>,
    pub end: End,
    /// From connecting to the end of the connection.
    pub elapsed: Duration,
}

/// Connects to `addr`, runs `steps` while reading everything the server
/// sends, until it closes or `deadline` passes. `head` marks a HEAD request
/// (its answers have no body). The write side stays open until the server
/// closes, unless a step half-closes it: a dropped socket would tell the
/// server the request ended early.
pub async fn exchange(
    addr: SocketAddr,
    steps: Vec<Step>,
    head: bool,
    deadline: Duration,
) -> Exchange {
    let started = Instant::now();
    let end_at = started + deadline;
    let stream = TcpStream::connect(addr).await.expect("connect to hookgate");
    let _ = stream.set_nodelay(true);
    let (mut rd, mut wr) = stream.into_split();
    let writer = tokio::spawn(async move {
        for step in steps {
            match step {
                Step::Send(b) => {
                    if wr.write_all(&b).await.is_err() {
                        break;
                    }
                }
                Step::Pause(d) => tokio::time::sleep(d).await,
                Step::Trickle { bytes, every } => {
                    for b in bytes {
                        if wr.write_all(&[b]).await.is_err() {
                            break;
                        }
                        tokio::time::sleep(every).await;
                    }
                }
                Step::HalfClose => {
                    let _ = wr.shutdown().await;
                }
            }
        }
        // Keep the write half (and so the connection) open until aborted.
        std::future::pending::<()>().await;
        drop(wr);
    });
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    let end = loop {
        match tokio::time::timeout_at(end_at, rd.read(&mut chunk)).await {
            Err(_) => break End::Open,
            Ok(Ok(0)) => break End::Closed,
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionReset => break End::Reset,
            Ok(Err(e)) => panic!("reading from hookgate: {e}"),
        }
    };
    let elapsed = started.elapsed();
    writer.abort();
    let (responses, leftover) = parse_responses(&buf, head);
    Exchange {
        responses,
        leftover,
        end,
        elapsed,
    }
}

/// Splits `buf` into complete responses; answers them and what is left.
pub fn parse_responses(mut buf: &[u8], head: bool) -> (Vec<Response>, Vec<u8>) {
    let mut out = Vec::new();
    while !buf.is_empty() {
        match parse_one(buf, head) {
            Some((r, used)) => {
                out.push(r);
                buf = &buf[used..];
            }
            None => break,
        }
    }
    (out, buf.to_vec())
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// One response at the start of `buf`, and the bytes it used.
fn parse_one(buf: &[u8], head: bool) -> Option<(Response, usize)> {
    let head_end = find(buf, b"\r\n\r\n")? + 4;
    let text = std::str::from_utf8(&buf[..head_end]).ok()?;
    let mut lines = text.split("\r\n");
    let status_line = lines.next()?;
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next()?;
    if !version.starts_with("HTTP/1.") {
        return None;
    }
    let status: u16 = parts.next()?.parse().ok()?;
    let headers: Vec<(String, Vec<u8>)> = lines
        .filter(|l| !l.is_empty())
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().as_bytes().to_vec()))
        .collect();
    let mut r = Response {
        status,
        headers,
        body: Vec::new(),
    };
    let rest = &buf[head_end..];
    if (100..200).contains(&status) || status == 204 || status == 304 || head {
        return Some((r, head_end));
    }
    let chunked = r
        .header("transfer-encoding")
        .is_some_and(|v| v.eq_ignore_ascii_case(b"chunked"));
    if chunked {
        let (body, used) = dechunk(rest)?;
        r.body = body;
        return Some((r, head_end + used));
    }
    match r.header("content-length") {
        Some(v) => {
            let n: usize = std::str::from_utf8(v).ok()?.parse().ok()?;
            if rest.len() < n {
                return None;
            }
            r.body = rest[..n].to_vec();
            Some((r, head_end + n))
        }
        // Delimited by the end of the connection.
        None => {
            r.body = rest.to_vec();
            Some((r, buf.len()))
        }
    }
}

/// Decodes a chunked body (trailers skipped): the body and the bytes used.
fn dechunk(mut buf: &[u8]) -> Option<(Vec<u8>, usize)> {
    let total = buf.len();
    let mut body = Vec::new();
    loop {
        let line_end = find(buf, b"\r\n")?;
        let size_text = std::str::from_utf8(&buf[..line_end]).ok()?;
        let size_text = size_text.split(';').next()?.trim();
        let size = usize::from_str_radix(size_text, 16).ok()?;
        buf = &buf[line_end + 2..];
        if size == 0 {
            // Trailers, then an empty line.
            loop {
                let e = find(buf, b"\r\n")?;
                buf = &buf[e + 2..];
                if e == 0 {
                    return Some((body, total - buf.len()));
                }
            }
        }
        if buf.len() < size + 2 {
            return None;
        }
        body.extend_from_slice(&buf[..size]);
        buf = &buf[size + 2..];
    }
}

/// Printable form of raw bytes for failure messages, cut at `max` bytes.
pub fn escape(b: &[u8], max: usize) -> String {
    let mut s: String = b
        .iter()
        .take(max)
        .flat_map(|&c| std::ascii::escape_default(c))
        .map(char::from)
        .collect();
    if b.len() > max {
        s.push_str(&format!("… ({} bytes)", b.len()));
    }
    s
}

#[test]
fn parses_pipelined_chunked_and_close_delimited_answers() {
    let wire = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 202 Accepted\r\ncontent-length: 2\r\n\r\nokHTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nx: y\r\n\r\nHTTP/1.0 400 Bad Request\r\n\r\nrest";
    let (r, left) = parse_responses(wire, false);
    assert!(left.is_empty());
    let got: Vec<(u16, &[u8])> = r.iter().map(|r| (r.status, r.body.as_slice())).collect();
    assert_eq!(
        got,
        vec![(100, &b""[..]), (202, b"ok"), (200, b"abc"), (400, b"rest")]
    );
    let (r, left) = parse_responses(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nab", false);
    assert!(r.is_empty());
    assert_eq!(left.len(), 40);
}
