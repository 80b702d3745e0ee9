//! The `http://` transport: hyper's HTTP/1.1 client connections (`hyper::client::conn::http1`),
//! kept alive and pooled per endpoint.
//!
//! hyper does the framing (Content-Length, chunked, until close, 1xx), its limits and the checks
//! its maintainers fuzz; the prepared head goes out with `sendmsg` and the shared body with
//! `sendfile` from a sealed memfd ([`super::zero_copy`]), or head and body in one `writev` when the
//! bodies stay in Python's memory.
//! Each connection is driven by its own task on the I/O runtime, which notices a server closing an
//! idle connection when it next runs; a pooled connection is also looked at (a peek at its socket)
//! right before reuse, so a close that has arrived is never mistaken for a live connection.
//!
//! A request is sent again only when hyper hands it back unsent: the pooled connection closed
//! before any byte of it was written. Any failure after that is reported as it is, never retried:
//! the server may have received and run the request.

use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use hyper::http::uri::{Authority, PathAndQuery};
use hyper::Uri;
use hyper_util::rt::TokioIo;
use reqwest::header::{HeaderValue, CONTENT_LENGTH, HOST};
use reqwest::Method;
use tokio::net::TcpStream;

use super::zero_copy::{BodyStream, Sealed};
use super::{describe, failed, too_large, Progress, RequestSpec, Response};
use crate::engine::runtime::PerProcess;
use crate::error::{Error, Result};

type Sender = http1::SendRequest<Full<Bytes>>;

/// A kept-alive connection: hyper's handle, and a duplicate of its socket's descriptor to look at
/// the socket before reuse (a duplicate, so it stays the same socket whatever hyper's task does).
struct Connection {
    sender: Sender,
    socket: OwnedFd,
}

impl Connection {
    /// The server closed it (or reset it, or sent bytes no request asked for): not reusable.
    fn peer_gone(&self) -> bool {
        let mut byte = 0u8;
        // SAFETY: peeks at most one byte into a live u8, without blocking, on a descriptor we own.
        let n = unsafe {
            libc::recv(
                self.socket.as_raw_fd(),
                std::ptr::from_mut(&mut byte).cast(),
                1,
                libc::MSG_PEEK | libc::MSG_DONTWAIT,
            )
        };
        n >= 0 || io::Error::last_os_error().kind() != io::ErrorKind::WouldBlock
    }
}

/// One prepared request and its pool of keep-alive connections.
pub struct Client {
    /// `host:port`, as connected to.
    authority: String,
    /// The request target: path and query.
    target: Uri,
    /// Each body's complete headers (the request's, the body's own, `Host` and `Content-Length`),
    /// built once.
    headers: Vec<reqwest::header::HeaderMap>,
    idle: PerProcess<Vec<Connection>>,
    /// The memfd the bodies were moved into, when they were.
    sealed: Option<Arc<Sealed>>,
}

impl Client {
    /// Prepares `spec` (an `http://` URL) for sending; `sealed` holds its bodies when they were
    /// moved into a memfd.
    pub fn new(spec: &RequestSpec, sealed: Option<Arc<Sealed>>) -> Result<Self> {
        let url = &spec.url;
        let invalid = |what: &str| Error::InvalidArgument(format!("URL {url} {what}"));
        let host = url.host_str().ok_or_else(|| invalid("has no host"))?;
        let port = url
            .port_or_known_default()
            .ok_or_else(|| invalid("has no port"))?;
        let path = match url.query() {
            Some(query) => format!("{}?{query}", url.path()),
            None => url.path().to_string(),
        };
        let target = Uri::from(
            PathAndQuery::try_from(path).map_err(|e| invalid(&format!("has a bad path: {e}")))?,
        );
        let mut base = spec.headers.clone();
        if !base.contains_key(HOST) {
            let value = match url.port() {
                Some(port) => format!("{host}:{port}"),
                None => host.to_string(),
            };
            Authority::try_from(value.as_str())
                .map_err(|e| invalid(&format!("has a bad host: {e}")))?;
            let value = HeaderValue::try_from(value)
                .map_err(|e| invalid(&format!("has a bad host: {e}")))?;
            base.insert(HOST, value);
        }
        let headers = spec
            .bodies
            .iter()
            .map(|body| {
                let mut headers = base.clone();
                for (name, value) in &body.headers {
                    headers.insert(name, value.clone());
                }
                // hyper leaves out `content-length: 0`, which servers want on an empty POST.
                if !matches!(spec.method, Method::GET | Method::HEAD) || !body.bytes.is_empty() {
                    headers.insert(CONTENT_LENGTH, HeaderValue::from(body.bytes.len()));
                }
                headers
            })
            .collect();
        Ok(Client {
            authority: format!("{host}:{port}"),
            target,
            headers,
            idle: PerProcess::new(),
            sealed,
        })
    }

    /// Whether bodies go out with `sendfile` from a sealed memfd.
    pub fn zero_copy(&self) -> bool {
        self.sealed.is_some()
    }

    fn request(&self, spec: &RequestSpec, index: usize) -> hyper::Request<Full<Bytes>> {
        let mut request = hyper::Request::new(Full::new(spec.bodies[index].bytes.clone()));
        *request.method_mut() = spec.method.clone();
        *request.uri_mut() = self.target.clone();
        *request.headers_mut() = self.headers[index].clone();
        request
    }

    /// Sends the request with body `index` and reads the whole response, timed from `start`.
    pub async fn exchange(
        &self,
        spec: &RequestSpec,
        index: usize,
        start: Instant,
        progress: &mut Progress<'_>,
    ) -> Result<Response> {
        let mut request = self.request(spec, index);
        let (connection, response) = loop {
            let (mut connection, pooled) = match self.checkout().await {
                Some(connection) => (connection, true),
                None => (self.connect(spec).await?, false),
            };
            match connection.sender.try_send_request(request).await {
                Ok(response) => break (connection, response),
                Err(mut error) => match error.take_message() {
                    // Closed before any byte was written: the server cannot have seen it.
                    Some(unsent) if pooled => {
                        progress.resent = true;
                        request = unsent;
                    }
                    Some(_) => {
                        let reason = describe(&error.into_error());
                        return Err(failed(
                            spec,
                            format!("connection closed before the request was sent: {reason}"),
                        ));
                    }
                    None => return Err(request_failed(spec, &error.into_error())),
                },
            }
        };
        let ttfb = start.elapsed();
        let status = response.status().as_u16();
        let (parts, mut body) = response.into_parts();
        let keep = progress.head(status, &parts.headers);
        let length = parts
            .headers
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
        if length.is_some_and(|n| n > spec.max_response_bytes) {
            return Err(too_large(spec));
        }
        // Grown as bytes arrive, never sized from the header: a server announcing a terabyte and
        // sending a kilobyte costs a kilobyte (and the request fails as cut short).
        let mut bytes = BytesMut::new();
        let mut received = 0;
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| response_failed(spec, &e, length))?;
            if let Ok(data) = frame.into_data() {
                if received + data.len() > spec.max_response_bytes {
                    return Err(too_large(spec));
                }
                received += data.len();
                if keep {
                    bytes.extend_from_slice(&data);
                }
                progress.frame(&data, start)?;
            }
        }
        let total = start.elapsed();
        if !connection.sender.is_closed() {
            self.idle
                .with(|idle| idle.get_or_insert_with(Vec::new).push(connection));
        }
        // `connection` was moved into the pool or is dropped here, closing it.
        Ok(Response {
            status,
            headers: parts.headers,
            body: bytes.freeze(),
            length: received,
            ttfb,
            total,
            resent: progress.resent,
        })
    }

    /// The most recently used idle connection that can take a request now.
    async fn checkout(&self) -> Option<Connection> {
        loop {
            let mut connection = self.idle.with(|idle| idle.as_mut()?.pop())?;
            if connection.peer_gone() {
                continue;
            }
            // Ready at once unless its task is still finishing the last response; an error means
            // the connection closed while idle.
            if connection.sender.ready().await.is_ok() {
                return Some(connection);
            }
        }
    }

    async fn connect(&self, spec: &RequestSpec) -> Result<Connection> {
        let connect_error = |reason: String| Error::Connect {
            url: spec.url.to_string(),
            reason,
        };
        let stream = TcpStream::connect(self.authority.as_str())
            .await
            .map_err(|e| connect_error(e.to_string()))?;
        stream
            .set_nodelay(true)
            .map_err(|e| connect_error(e.to_string()))?;
        let socket = stream
            .as_fd()
            .try_clone_to_owned()
            .map_err(|e| connect_error(e.to_string()))?;
        let stream = BodyStream::new(stream, self.sealed.clone())
            .map_err(|e| connect_error(e.to_string()))?;
        let (sender, connection) = http1::Builder::new()
            .handshake(TokioIo::new(stream))
            .await
            .map_err(|e| connect_error(describe(&e)))?;
        // Ends when the connection closes, or when its last sender is dropped.
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(Connection { sender, socket })
    }
}

/// Why a request that hyper took failed.
fn request_failed(spec: &RequestSpec, error: &hyper::Error) -> Error {
    if error.is_incomplete_message() || error.is_canceled() {
        return failed(
            spec,
            "connection closed after the request was sent, before a complete response",
        );
    }
    if error.is_parse() || error.is_parse_status() {
        return failed(spec, format!("invalid HTTP response: {}", describe(error)));
    }
    failed(spec, describe(error))
}

/// Why reading the body of a response that `announced` a length (or none) failed.
fn response_failed(spec: &RequestSpec, error: &hyper::Error, announced: Option<usize>) -> Error {
    match announced {
        Some(length) => failed(spec, super::cut_short(length, &describe(error))),
        None if error.is_incomplete_message() => {
            failed(spec, "connection closed before the response was complete")
        }
        None => failed(spec, describe(error)),
    }
}

#[cfg(test)]
mod tests {
    use std::io::{BufRead, BufReader, Read, Write};
    use std::net::{TcpListener, TcpStream as StdStream};
    use std::sync::mpsc;
    use std::time::Duration;

    use super::*;

    /// Reads one request (head and Content-Length body) from `reader`.
    fn read_request(reader: &mut BufReader<StdStream>) -> Vec<u8> {
        let mut length = 0;
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            if line == "\r\n" {
                break;
            }
            if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                length = v.trim().parse().unwrap();
            }
        }
        let mut body = vec![0; length];
        reader.read_exact(&mut body).unwrap();
        body
    }

    fn answer(stream: &mut StdStream) {
        stream
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
            .unwrap();
    }

    fn accept_within(listener: &TcpListener, limit: Duration) -> Option<StdStream> {
        listener.set_nonblocking(true).unwrap();
        let deadline = std::time::Instant::now() + limit;
        while std::time::Instant::now() < deadline {
            if let Ok((stream, _)) = listener.accept() {
                stream.set_nonblocking(false).unwrap();
                return Some(stream);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        None
    }

    fn spec(port: u16) -> RequestSpec {
        RequestSpec {
            method: Method::POST,
            url: format!("http://127.0.0.1:{port}/infer").parse().unwrap(),
            headers: reqwest::header::HeaderMap::new(),
            bodies: vec![super::super::Body::new(Bytes::from_static(b"tensor"))],
            timeout: Duration::from_secs(10),
            max_response_bytes: 1024,
        }
    }

    /// The server answers on a keep-alive connection and closes it while the connection's task is
    /// not looking (one thread: it runs only where the client awaits). The close has reached the
    /// socket, so the next request sees it before writing anything and goes out on a new
    /// connection: once, and not counted as resent.
    #[test]
    fn a_close_that_arrived_is_noticed_before_the_request_is_written() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let (closed_tx, closed_rx) = mpsc::channel();
        let (close_tx, close_rx) = mpsc::channel::<()>();
        let server = std::thread::spawn(move || {
            let mut bodies = Vec::new();
            for connection in 0..2 {
                let Some(mut stream) = accept_within(&listener, Duration::from_secs(5)) else {
                    break; // the client sent no second request
                };
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                bodies.push(read_request(&mut reader));
                answer(&mut stream);
                if connection == 0 {
                    close_rx.recv().unwrap();
                    stream.shutdown(std::net::Shutdown::Both).unwrap();
                    drop((stream, reader));
                    closed_tx.send(()).unwrap();
                } else {
                    // nothing more arrives on the second connection
                    stream
                        .set_read_timeout(Some(Duration::from_millis(300)))
                        .unwrap();
                    let mut rest = Vec::new();
                    let _ = reader.read_to_end(&mut rest);
                    assert!(rest.is_empty(), "a second request on the new connection");
                }
            }
            bodies
        });
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let mut spec = spec(port);
        let sealed = super::super::zero_copy::seal(&mut spec.bodies);
        assert!(sealed.is_some());
        let client = Client::new(&spec, sealed).unwrap();
        let (first, second) = rt.block_on(async {
            let mut progress = Progress::default();
            let first = client
                .exchange(&spec, 0, Instant::now(), &mut progress)
                .await;
            tokio::time::sleep(Duration::from_millis(50)).await; // the connection's task goes idle
            close_tx.send(()).unwrap();
            closed_rx.recv().unwrap();
            std::thread::sleep(Duration::from_millis(100)); // the close reaches this socket
            let mut progress = Progress::default();
            let second = tokio::time::timeout(
                Duration::from_secs(5),
                client.exchange(&spec, 0, Instant::now(), &mut progress),
            )
            .await
            .expect("the second exchange hangs");
            (first.map(|r| r.resent), second.map(|r| r.resent))
        });
        assert_eq!(server.join().unwrap(), [b"tensor", b"tensor"]);
        assert_eq!((first, second), (Ok(false), Ok(false)));
    }

    /// A sink that keeps each frame's end offset and arrival time.
    #[derive(Default)]
    struct Marks {
        head: Option<u16>,
        frames: Vec<(usize, Duration)>,
        length: usize,
    }

    impl super::super::BodySink for Marks {
        fn head(&mut self, status: u16, _: &reqwest::header::HeaderMap) -> bool {
            self.head = Some(status);
            false
        }

        fn frame(&mut self, data: &[u8], at: Duration) -> Result<()> {
            self.length += data.len();
            self.frames.push((self.length, at));
            Ok(())
        }
    }

    /// Each frame reaches the sink as it arrives, stamped from the send: the server's pauses show
    /// in the marks. When the body is then cut, the marks received stay
    /// with the sink, and the exchange fails.
    #[test]
    fn frames_are_marked_as_they_arrive_and_kept_when_the_body_is_cut() {
        use super::super::script::{chunked_head, serve, Step};
        let pause = Duration::from_millis(40);
        let mut steps = vec![chunked_head("text/event-stream")];
        for part in [&b"data: 1\n\n"[..], b"data: 2\n\n", b"data: 3\n\n"] {
            steps.push(Step::Pause(pause));
            steps.push(Step::Chunk(part.to_vec()));
        }
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        for cut in [false, true] {
            let mut steps = steps.clone();
            if !cut {
                steps.push(Step::End);
            }
            let port = serve(steps);
            let mut spec = spec(port);
            let transport = super::super::Transport::new(
                &mut spec,
                super::super::ClientConfig::default(),
                true,
            )
            .unwrap();
            let mut marks = Marks::default();
            let result = rt.block_on(transport.send_to(&spec, 0, Some(&mut marks)));
            assert_eq!(marks.head, Some(200));
            let ends: Vec<usize> = marks.frames.iter().map(|m| m.0).collect();
            assert_eq!(ends, [9, 18, 27], "one frame per chunk, in order");
            // the server wrote chunk i after i + 1 pauses from reading the request; a late read
            // of one frame can shorten the gap to the next, so only these bounds always hold
            let at: Vec<Duration> = marks.frames.iter().map(|m| m.1).collect();
            for (i, t) in at.iter().enumerate() {
                assert!(*t >= pause * (i as u32 + 1), "{at:?}");
            }
            assert!(at.windows(2).all(|w| w[0] <= w[1]), "{at:?}");
            match result {
                Ok(response) => {
                    assert!(!cut);
                    assert_eq!((response.length, response.body.len()), (27, 0));
                    assert!(response.total >= at[2]);
                }
                Err(failure) => {
                    assert!(cut, "{:?}", failure.error);
                    assert_eq!(failure.error.kind(), "transport");
                    assert_eq!(failure.status, Some(200));
                }
            }
        }
    }
}
