//! The plain-`http://` transport: a lean HTTP/1.1 client over tokio for one prepared request.
//!
//! reqwest (hyper underneath) costs the I/O thread about 18 µs of its own work per request on top
//! of the system calls; for one prepared request most of that is not needed. Here the whole
//! request (head and body) is laid out once in one buffer and every send is plain `send` calls on
//! it, and the response is parsed in place with `httparse`. On the 602 KB Triton request this
//! cuts the I/O thread's CPU per request by about 10% at 10 users. `https://` stays on reqwest.
//!
//! Sending the body with `sendfile` from a sealed memfd instead (no copy into the kernel) was
//! measured and rejected: with BBR, the kernel default here, TCP's internal pacing then throttles
//! the sender, and a run lands at random in a fast or a 2.5x slower mode.
//!
//! Kept only to be measured against hyper's client in `make bench` (`LOCUST_INFERENCE_HTTP1=lean`).
//!
//! Keep-alive connections are pooled per endpoint. A pooled connection is checked before use: one
//! the server closed, or sent unasked bytes on, is dropped. A request is never sent twice: if the
//! server closes the connection as the request goes out, the request fails.

use std::io;
use std::os::fd::AsRawFd;
use std::task::{Context, Waker};
use std::time::Instant;

use bytes::{Buf, Bytes, BytesMut};
use reqwest::header::{
    HeaderMap, HeaderName, HeaderValue, CONTENT_LENGTH, HOST, TRANSFER_ENCODING,
};
use reqwest::Method;
use tokio::io::Interest;
use tokio::net::TcpStream;

use super::{Progress, RequestSpec, Response};
use crate::error::{Error, Result};
use crate::runtime::PerProcess;

/// Cap on a response head (status line and headers), and on a chunked body's trailers.
const MAX_HEAD_BYTES: usize = 64 * 1024;
const MAX_HEADERS: usize = 128;
/// Cap on one chunk-size line of a chunked body (size and extensions).
const MAX_CHUNK_LINE: usize = 1024;
const READ_RESERVE: usize = 16 * 1024;

struct Connection {
    stream: TcpStream,
    buf: BytesMut,
}

impl Connection {
    /// Whether an idle connection can carry a request: the server has neither closed it nor sent
    /// anything unasked (which would be read as the next response). Costs no system call unless the
    /// socket was reported readable.
    fn is_clean(&mut self) -> bool {
        let mut cx = Context::from_waker(Waker::noop());
        if self.stream.poll_read_ready(&mut cx).is_pending() {
            return true;
        }
        match self.stream.try_read_buf(&mut self.buf) {
            Err(e) => e.kind() == io::ErrorKind::WouldBlock,
            Ok(_) => false, // end of stream, or stray bytes
        }
    }
}

/// One prepared request and its pool of keep-alive connections.
pub struct Client {
    /// `host:port`, as connected to.
    authority: String,
    /// The request as it goes on the wire: head and body.
    request: Bytes,
    /// A `HEAD` request: its response never has a body.
    head_only: bool,
    idle: PerProcess<Vec<Connection>>,
}

/// Why one attempt on one connection failed.
enum Attempt {
    /// The connection ended before any response byte.
    Stale(io::Error),
    Failed(Error),
}

impl Client {
    /// Prepares `spec` (an `http://` URL) for sending.
    pub fn new(spec: &RequestSpec) -> Result<Self> {
        let url = &spec.url;
        let host = url
            .host_str()
            .ok_or_else(|| Error::InvalidArgument(format!("URL {url} has no host")))?;
        let port = url
            .port_or_known_default()
            .ok_or_else(|| Error::InvalidArgument(format!("URL {url} has no port")))?;
        let authority = format!("{host}:{port}");
        let mut head = Vec::with_capacity(512 + spec.body.len());
        head.extend_from_slice(spec.method.as_str().as_bytes());
        head.push(b' ');
        head.extend_from_slice(url.path().as_bytes());
        if let Some(query) = url.query() {
            head.push(b'?');
            head.extend_from_slice(query.as_bytes());
        }
        head.extend_from_slice(b" HTTP/1.1\r\n");
        if !spec.headers.contains_key(HOST) {
            head.extend_from_slice(b"host: ");
            head.extend_from_slice(host.as_bytes());
            if let Some(port) = url.port() {
                head.extend_from_slice(format!(":{port}").as_bytes());
            }
            head.extend_from_slice(b"\r\n");
        }
        for (name, value) in &spec.headers {
            head.extend_from_slice(name.as_str().as_bytes());
            head.extend_from_slice(b": ");
            head.extend_from_slice(value.as_bytes());
            head.extend_from_slice(b"\r\n");
        }
        let body_allowed = !matches!(spec.method, Method::GET | Method::HEAD);
        if body_allowed || !spec.body.is_empty() {
            head.extend_from_slice(format!("content-length: {}\r\n", spec.body.len()).as_bytes());
        }
        head.extend_from_slice(b"\r\n");
        head.extend_from_slice(&spec.body);
        Ok(Client {
            authority,
            request: Bytes::from(head),
            head_only: spec.method == Method::HEAD,
            idle: PerProcess::new(),
        })
    }

    /// Sends the request and reads the whole response, timed from `start`.
    pub async fn exchange(
        &self,
        spec: &RequestSpec,
        start: Instant,
        progress: &mut Progress,
    ) -> Result<Response> {
        let mut conn = match self.checkout() {
            Some(conn) => conn,
            None => self.connect(spec).await?,
        };
        match self
            .attempt(&mut conn, spec, start, &mut progress.status)
            .await
        {
            Ok((response, reusable)) => {
                if reusable {
                    self.idle
                        .with(|idle| idle.get_or_insert_with(Vec::new).push(conn));
                }
                Ok(response)
            }
            Err(Attempt::Failed(error)) => Err(error),
            Err(Attempt::Stale(e)) => Err(transport(spec, closed_reason(&e))),
        }
    }

    fn checkout(&self) -> Option<Connection> {
        self.idle.with(|idle| {
            let idle = idle.as_mut()?;
            while let Some(mut conn) = idle.pop() {
                if conn.is_clean() {
                    return Some(conn);
                }
            }
            None
        })
    }

    async fn connect(&self, spec: &RequestSpec) -> Result<Connection> {
        let connect_error = |e: io::Error| Error::Connect {
            url: spec.url.to_string(),
            reason: e.to_string(),
        };
        let stream = TcpStream::connect(self.authority.as_str())
            .await
            .map_err(connect_error)?;
        stream.set_nodelay(true).map_err(connect_error)?;
        Ok(Connection {
            stream,
            buf: BytesMut::with_capacity(READ_RESERVE),
        })
    }

    /// One request and response on `conn`; `Ok` also says whether the connection can be reused.
    async fn attempt(
        &self,
        conn: &mut Connection,
        spec: &RequestSpec,
        start: Instant,
        status: &mut Option<u16>,
    ) -> std::result::Result<(Response, bool), Attempt> {
        conn.buf.clear();
        if let Err(e) = send_all(&conn.stream, &self.request).await {
            return Err(if is_stale(&e) {
                Attempt::Stale(e)
            } else {
                Attempt::Failed(transport(spec, e.to_string()))
            });
        }
        let head = read_head(conn, spec, self.head_only).await?;
        *status = Some(head.status);
        let ttfb = start.elapsed();
        let body = read_body(conn, spec, head.framing).await?;
        // Bytes past the body were never asked for: such a connection is out of step.
        let reusable = head.keep_alive && conn.buf.is_empty();
        Ok((
            Response {
                status: head.status,
                headers: head.headers,
                body,
                ttfb,
                total: start.elapsed(),
                resent: false,
            },
            reusable,
        ))
    }
}

/// Reads the response head, skipping any 1xx interim responses.
async fn read_head(
    conn: &mut Connection,
    spec: &RequestSpec,
    head_only: bool,
) -> std::result::Result<Head, Attempt> {
    loop {
        match parse_head(&conn.buf, head_only).map_err(|r| invalid(spec, &r))? {
            Some((length, head)) => {
                conn.buf.advance(length);
                if head.status == 101 {
                    return Err(invalid(spec, "unexpected 101 Switching Protocols"));
                }
                if !(100..200).contains(&head.status) {
                    return Ok(head);
                }
            }
            None if conn.buf.len() > MAX_HEAD_BYTES => {
                return Err(invalid(spec, "response head larger than 64 KiB"));
            }
            None => {
                let received = !conn.buf.is_empty();
                match read_more(&conn.stream, &mut conn.buf).await {
                    Ok(0) if !received => {
                        return Err(Attempt::Stale(io::ErrorKind::UnexpectedEof.into()))
                    }
                    Ok(0) => return Err(Attempt::Failed(incomplete(spec))),
                    Ok(_) => {}
                    Err(e) if !received && is_stale(&e) => return Err(Attempt::Stale(e)),
                    Err(e) => return Err(Attempt::Failed(transport(spec, e.to_string()))),
                }
            }
        }
    }
}

/// Reads the body as `framing` delimits it, within `spec.max_response_bytes`.
async fn read_body(
    conn: &mut Connection,
    spec: &RequestSpec,
    framing: Framing,
) -> std::result::Result<Bytes, Attempt> {
    let too_large = || {
        Attempt::Failed(Error::TooLarge {
            url: spec.url.to_string(),
            limit: spec.max_response_bytes,
        })
    };
    match framing {
        Framing::Empty => Ok(Bytes::new()),
        Framing::Length(n) => {
            if n > spec.max_response_bytes {
                return Err(too_large());
            }
            conn.buf.reserve(n.saturating_sub(conn.buf.len()));
            while conn.buf.len() < n {
                fill(conn, spec, false).await?;
            }
            Ok(conn.buf.split_to(n).freeze())
        }
        Framing::Chunked => {
            let mut decoder = Chunked::default();
            let mut body = BytesMut::new();
            loop {
                match decoder.decode(&mut conn.buf, &mut body, spec.max_response_bytes) {
                    Ok(true) => return Ok(body.freeze()),
                    Ok(false) => fill(conn, spec, false).await.map(drop)?,
                    Err(ChunkError::TooLarge) => return Err(too_large()),
                    Err(ChunkError::Invalid(reason)) => return Err(invalid(spec, reason)),
                }
            }
        }
        Framing::UntilClose => loop {
            if conn.buf.len() > spec.max_response_bytes {
                return Err(too_large());
            }
            if fill(conn, spec, true).await? == 0 {
                return Ok(conn.buf.split().freeze());
            }
        },
    }
}

/// Reads more of the response; the end of the stream is a failure unless `until_close`.
async fn fill(
    conn: &mut Connection,
    spec: &RequestSpec,
    until_close: bool,
) -> std::result::Result<usize, Attempt> {
    match read_more(&conn.stream, &mut conn.buf).await {
        Ok(0) if !until_close => Err(Attempt::Failed(incomplete(spec))),
        Ok(n) => Ok(n),
        Err(e) => Err(Attempt::Failed(transport(spec, e.to_string()))),
    }
}

/// Writes all of `data` (`MSG_NOSIGNAL`: a peer that went away is an error, never a `SIGPIPE`).
async fn send_all(stream: &TcpStream, mut data: &[u8]) -> io::Result<()> {
    let flags = libc::MSG_NOSIGNAL;
    while !data.is_empty() {
        stream.writable().await?;
        let sent = stream.try_io(Interest::WRITABLE, || {
            // SAFETY: sends from a live slice of `data.len()` bytes on the stream's own socket.
            let n =
                unsafe { libc::send(stream.as_raw_fd(), data.as_ptr().cast(), data.len(), flags) };
            if n < 0 {
                Err(io::Error::last_os_error())
            } else {
                Ok(n as usize)
            }
        });
        match sent {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => data = &data[n..],
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                ) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Reads what is available (waiting for at least one byte) into `buf`; `Ok(0)` is the end of the
/// stream.
async fn read_more(stream: &TcpStream, buf: &mut BytesMut) -> io::Result<usize> {
    buf.reserve(READ_RESERVE);
    loop {
        stream.readable().await?;
        match stream.try_read_buf(buf) {
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                ) => {}
            result => return result,
        }
    }
}

/// The failures that mean the peer had closed the connection before it got the request.
fn is_stale(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::BrokenPipe
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::UnexpectedEof
    )
}

fn closed_reason(e: &io::Error) -> String {
    if e.kind() == io::ErrorKind::UnexpectedEof {
        "connection closed after the request was sent, before a complete response".into()
    } else {
        e.to_string()
    }
}

fn transport(spec: &RequestSpec, reason: String) -> Error {
    Error::Transport {
        url: spec.url.to_string(),
        reason,
    }
}

fn incomplete(spec: &RequestSpec) -> Error {
    transport(
        spec,
        "connection closed before the response was complete".into(),
    )
}

fn invalid(spec: &RequestSpec, reason: impl std::fmt::Display) -> Attempt {
    Attempt::Failed(transport(spec, format!("invalid HTTP response: {reason}")))
}

/// How a response body is delimited (RFC 9112, section 6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    Empty,
    Length(usize),
    Chunked,
    UntilClose,
}

#[derive(Debug)]
struct Head {
    status: u16,
    headers: HeaderMap,
    framing: Framing,
    keep_alive: bool,
}

/// Parses a response head from the start of `buf`: `Ok(None)` while it is incomplete, else its
/// length in bytes and what it says.
fn parse_head(buf: &[u8], head_only: bool) -> std::result::Result<Option<(usize, Head)>, String> {
    let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut slots);
    let length = match response.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(e.to_string()),
    };
    let status = response.code.unwrap_or_default();
    let http11 = response.version == Some(1);
    let mut headers = HeaderMap::with_capacity(response.headers.len());
    for h in response.headers.iter() {
        let name = HeaderName::from_bytes(h.name.as_bytes())
            .map_err(|_| format!("invalid header name {:?}", h.name))?;
        let value = HeaderValue::from_bytes(h.value)
            .map_err(|_| format!("invalid value for header {:?}", h.name))?;
        headers.append(name, value);
    }
    let connection_has = |token: &str| {
        headers
            .get_all(reqwest::header::CONNECTION)
            .iter()
            .any(|v| {
                v.as_bytes()
                    .split(|&b| b == b',')
                    .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
            })
    };
    let mut keep_alive = if http11 {
        !connection_has("close")
    } else {
        connection_has("keep-alive")
    };
    let framing = if head_only || (100..200).contains(&status) || status == 204 || status == 304 {
        Framing::Empty
    } else if let Some(last) = headers.get_all(TRANSFER_ENCODING).iter().next_back() {
        let chunked_last = last
            .as_bytes()
            .rsplit(|&b| b == b',')
            .next()
            .is_some_and(|t| t.trim_ascii().eq_ignore_ascii_case(b"chunked"));
        if chunked_last {
            Framing::Chunked
        } else {
            Framing::UntilClose
        }
    } else if headers.contains_key(CONTENT_LENGTH) {
        Framing::Length(content_length(&headers)?)
    } else {
        Framing::UntilClose
    };
    if framing == Framing::UntilClose {
        keep_alive = false;
    }
    Ok(Some((
        length,
        Head {
            status,
            headers,
            framing,
            keep_alive,
        },
    )))
}

/// The one Content-Length, repeated values allowed only when they agree.
fn content_length(headers: &HeaderMap) -> std::result::Result<usize, String> {
    let mut found: Option<usize> = None;
    for value in headers.get_all(CONTENT_LENGTH) {
        for part in value.as_bytes().split(|&b| b == b',') {
            let text = std::str::from_utf8(part.trim_ascii()).unwrap_or("");
            let n = (!text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()))
                .then(|| text.parse::<usize>().ok())
                .flatten()
                .ok_or_else(|| {
                    format!(
                        "invalid Content-Length {:?}",
                        String::from_utf8_lossy(value.as_bytes())
                    )
                })?;
            if found.is_some_and(|f| f != n) {
                return Err("conflicting Content-Length values".into());
            }
            found = Some(n);
        }
    }
    found.ok_or_else(|| "empty Content-Length".into())
}

#[derive(Debug, PartialEq, Eq)]
enum ChunkError {
    Invalid(String),
    TooLarge,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    #[default]
    Size,
    Data(usize),
    DataEnd,
    Trailers(usize),
    Done,
}

/// An incremental decoder of the chunked transfer coding.
#[derive(Debug, Default)]
struct Chunked {
    state: ChunkState,
}

impl Chunked {
    /// Moves what it can from `input` to `out`; `Ok(true)` once the last chunk and trailers are in,
    /// `Ok(false)` when more input is needed. `out` never grows past `limit`.
    fn decode(
        &mut self,
        input: &mut BytesMut,
        out: &mut BytesMut,
        limit: usize,
    ) -> std::result::Result<bool, ChunkError> {
        let invalid = |reason: &str| ChunkError::Invalid(reason.to_string());
        loop {
            match self.state {
                ChunkState::Size => {
                    let Some(end) = memchr::memmem::find(input, b"\r\n") else {
                        if input.len() > MAX_CHUNK_LINE {
                            return Err(invalid("chunk size line too long"));
                        }
                        return Ok(false);
                    };
                    if end > MAX_CHUNK_LINE {
                        return Err(invalid("chunk size line too long"));
                    }
                    let line = &input[..end];
                    let digits = line
                        .split(|&b| b == b';')
                        .next()
                        .unwrap_or_default()
                        .trim_ascii();
                    let size = std::str::from_utf8(digits)
                        .ok()
                        .filter(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_hexdigit()))
                        .and_then(|d| usize::from_str_radix(d, 16).ok())
                        .ok_or_else(|| invalid("invalid chunk size"))?;
                    input.advance(end + 2);
                    self.state = if size == 0 {
                        ChunkState::Trailers(0)
                    } else if out.len().saturating_add(size) > limit {
                        return Err(ChunkError::TooLarge);
                    } else {
                        out.reserve(size);
                        ChunkState::Data(size)
                    };
                }
                ChunkState::Data(left) => {
                    if input.is_empty() {
                        return Ok(false);
                    }
                    let take = left.min(input.len());
                    out.extend_from_slice(&input[..take]);
                    input.advance(take);
                    self.state = if take == left {
                        ChunkState::DataEnd
                    } else {
                        ChunkState::Data(left - take)
                    };
                }
                ChunkState::DataEnd => {
                    if input.len() < 2 {
                        return Ok(false);
                    }
                    if &input[..2] != b"\r\n" {
                        return Err(invalid("chunk data not followed by CRLF"));
                    }
                    input.advance(2);
                    self.state = ChunkState::Size;
                }
                ChunkState::Trailers(seen) => {
                    let Some(end) = memchr::memmem::find(input, b"\r\n") else {
                        if seen + input.len() > MAX_HEAD_BYTES {
                            return Err(invalid("trailers larger than 64 KiB"));
                        }
                        return Ok(false);
                    };
                    input.advance(end + 2);
                    self.state = if end == 0 {
                        ChunkState::Done
                    } else if seen + end + 2 > MAX_HEAD_BYTES {
                        return Err(invalid("trailers larger than 64 KiB"));
                    } else {
                        ChunkState::Trailers(seen + end + 2)
                    };
                }
                ChunkState::Done => return Ok(true),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(text: &str) -> Head {
        let (n, head) = parse_head(text.as_bytes(), false).unwrap().unwrap();
        assert_eq!(n, text.len());
        head
    }

    #[test]
    fn content_length_framing_and_keep_alive() {
        let h = head("HTTP/1.1 200 OK\r\ncontent-length: 12\r\n\r\n");
        assert_eq!(
            (h.status, h.framing, h.keep_alive),
            (200, Framing::Length(12), true)
        );
        let h = head("HTTP/1.1 200 OK\r\nConnection: Close\r\nContent-Length: 3\r\n\r\n");
        assert!(!h.keep_alive);
        let h = head("HTTP/1.0 200 OK\r\nContent-Length: 3\r\n\r\n");
        assert!(!h.keep_alive, "HTTP/1.0 closes unless it says keep-alive");
        let h = head("HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 3\r\n\r\n");
        assert!(h.keep_alive);
        let h = head("HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\n\r\n");
        assert_eq!(h.framing, Framing::Length(5));
    }

    #[test]
    fn other_framings() {
        assert_eq!(
            head("HTTP/1.1 204 No Content\r\n\r\n").framing,
            Framing::Empty
        );
        assert_eq!(
            head("HTTP/1.1 304 Not Modified\r\ncontent-length: 9\r\n\r\n").framing,
            Framing::Empty
        );
        let h = head(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\nContent-Length: 9\r\n\r\n",
        );
        assert_eq!((h.framing, h.keep_alive), (Framing::Chunked, true));
        let h = head("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n");
        assert_eq!((h.framing, h.keep_alive), (Framing::UntilClose, false));
        let h = head("HTTP/1.1 200 OK\r\n\r\n");
        assert_eq!((h.framing, h.keep_alive), (Framing::UntilClose, false));
        let text = "HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\n";
        let (_, h) = parse_head(text.as_bytes(), true).unwrap().unwrap();
        assert_eq!(h.framing, Framing::Empty, "a HEAD response has no body");
    }

    #[test]
    fn incomplete_and_invalid_heads() {
        assert!(parse_head(b"HTTP/1.1 200 OK\r\ncontent-len", false)
            .unwrap()
            .is_none());
        assert!(parse_head(b"", false).unwrap().is_none());
        assert!(parse_head(b"SMTP ready\r\n\r\n", false).is_err());
        for bad in ["abc", "-5", "1e3", "", "5, 6"] {
            let text = format!("HTTP/1.1 200 OK\r\ncontent-length: {bad}\r\n\r\n");
            let err = parse_head(text.as_bytes(), false).unwrap_err();
            assert!(err.contains("Content-Length"), "{bad:?}: {err}");
        }
    }

    #[test]
    fn headers_are_kept() {
        let h = head(
            "HTTP/1.1 200 OK\r\nInference-Header-Content-Length: 77\r\ncontent-length: 0\r\n\r\n",
        );
        assert_eq!(
            h.headers.get("inference-header-content-length").unwrap(),
            "77"
        );
    }

    fn decode_in_pieces(
        wire: &[u8],
        piece: usize,
        limit: usize,
    ) -> std::result::Result<(Vec<u8>, Vec<u8>), ChunkError> {
        let mut decoder = Chunked::default();
        let mut input = BytesMut::new();
        let mut out = BytesMut::new();
        let mut fed = 0;
        for part in wire.chunks(piece) {
            input.extend_from_slice(part);
            fed += part.len();
            if decoder.decode(&mut input, &mut out, limit)? {
                let mut left = input.to_vec();
                left.extend_from_slice(&wire[fed..]);
                return Ok((out.to_vec(), left));
            }
        }
        Err(ChunkError::Invalid("incomplete".into()))
    }

    #[test]
    fn chunked_bodies_decode_however_they_are_split() {
        let wire =
            b"5;ext=1\r\nhello\r\n7\r\n, world\r\nA\r\n0123456789\r\n0\r\nx-trailer: 1\r\n\r\nNEXT";
        for piece in 1..=wire.len() {
            let (body, left) = decode_in_pieces(wire, piece, 1 << 20).unwrap();
            assert_eq!(body, b"hello, world0123456789", "piece {piece}");
            assert_eq!(left, b"NEXT", "piece {piece}");
        }
    }

    #[test]
    fn bad_chunked_bodies_are_errors() {
        for (wire, reason) in [
            (&b"zz\r\nhello\r\n0\r\n\r\n"[..], "invalid chunk size"),
            (b"\r\n", "invalid chunk size"),
            (b"5\r\nhelloXX0\r\n\r\n", "not followed by CRLF"),
            (b"fffffffffffffffffffff\r\n", "invalid chunk size"),
        ] {
            match decode_in_pieces(wire, wire.len(), 1 << 20) {
                Err(ChunkError::Invalid(r)) => assert!(r.contains(reason), "{r}"),
                other => panic!("{wire:?}: {other:?}"),
            }
        }
        let long = vec![b'1'; MAX_CHUNK_LINE + 10];
        assert!(
            matches!(decode_in_pieces(&long, 7, 1 << 20), Err(ChunkError::Invalid(r)) if r.contains("too long"))
        );
        assert_eq!(
            decode_in_pieces(b"6\r\nhello!\r\n0\r\n\r\n", 4, 5),
            Err(ChunkError::TooLarge)
        );
        assert!(decode_in_pieces(b"5\r\nhello\r\n0\r\n\r\n", 4, 5).is_ok());
    }
}
