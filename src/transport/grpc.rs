//! The gRPC transport: unary calls on tonic's HTTP/2 channels, for Triton's
//! `GRPCInferenceService`. The URL's scheme says `http://` (cleartext HTTP/2) or `https://`, and
//! its path names the RPC (`/inference.GRPCInferenceService/ModelInfer`). A path naming
//! `ModelStreamInfer` is read as a stream: each response message goes to the request's
//! [`super::BodySink`] as it arrives, until the sink has the final one.
//!
//! Over `https://` the certificate is checked as on the HTTP transport ([`super::tls`]: the public
//! roots, or `--ca-file` with its pinned self-signed certificates, or nothing with `--insecure`),
//! through a TLS connector of ours under tonic, offering only `h2`.
//!
//! Each body is a complete protobuf message, encoded once at start. It goes out as it is, behind
//! the 5-byte gRPC frame prefix, as the request's HTTP/2 body ([`Framed`]: the shared bytes, not a
//! copy; tonic's codecs would copy each message into a send buffer), on tonic's channel; the
//! response is read by tonic's `Streaming` (frame lengths checked against the limit before any
//! buffering, trailers, statuses) with [`PassThrough`], which hands the message back undecoded for
//! the protocol's check. All users of a process share `connections` HTTP/2 connections, each
//! multiplexing their requests.
//!
//! A gRPC status other than OK becomes [`Error::Grpc`], naming the code and the server's message;
//! a message over `max_response_bytes` is refused from its frame's length prefix, before it is
//! buffered. Nothing is sent twice: tonic and h2 do not retry a request.
//!
//! Each call carries the request timeout as its deadline (`grpc-timeout`), so the server can stop
//! work nobody waits for; the server's DEADLINE_EXCEEDED and the client's own timer are the same
//! failure, [`Error::Timeout`], whichever comes first.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes};
use reqwest::header::HeaderMap;
use tonic::codec::{DecodeBuf, Decoder};
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};

use rustls::pki_types::ServerName;

use super::{describe, tls, too_large, ClientConfig, Progress, RequestSpec, Response};
use crate::engine::runtime::PerProcess;
use crate::error::{Error, Result};
use crate::protocol::reason;

/// HTTP/2 flow-control windows this client advertises for what it receives. h2's default (64 KiB)
/// holds a 602 KB message for ten round trips of WINDOW_UPDATE; these take any message up to the
/// stream window in one flight (the server's windows govern what we send).
const STREAM_WINDOW: u32 = 8 * 1024 * 1024;
const CONNECTION_WINDOW: u32 = 32 * 1024 * 1024;

/// Requests that may wait for a channel's connection task: beyond that, callers wait in
/// `ready()` (tonic's default is 1024).
const CHANNEL_BUFFER: usize = 4096;

/// The bidirectional RPC's name: a path ending so is read as a stream of responses.
pub const STREAM_RPC: &str = "/ModelStreamInfer";

/// The most connections one endpoint opens per process (`--grpc-connections` has the same bound):
/// each is a task and a socket made up front, so the number is bounded before any is made.
pub const MAX_CONNECTIONS: usize = 64;

/// A request's HTTP/2 body: one gRPC frame, its 5-byte prefix (uncompressed, big-endian length)
/// and the prepared message, handed over as two chunks so the message is never copied.
struct Framed {
    prefix: Option<Bytes>,
    message: Option<Bytes>,
}

impl Framed {
    fn new(message: Bytes) -> Result<Self> {
        Self::with_flag(message, false)
    }

    /// The frame of `message`, flagged compressed when it is (gRPC's message-encoding).
    fn with_flag(message: Bytes, compressed: bool) -> Result<Self> {
        let length = u32::try_from(message.len()).map_err(|_| {
            Error::InvalidArgument(format!(
                "a {}-byte message is over gRPC's 4 GiB frame limit",
                message.len()
            ))
        })?;
        let mut prefix = [u8::from(compressed), 0, 0, 0, 0];
        prefix[1..].copy_from_slice(&length.to_be_bytes());
        Ok(Framed {
            prefix: Some(Bytes::copy_from_slice(&prefix)),
            message: Some(message),
        })
    }
}

impl hyper::body::Body for Framed {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Self::Error>>> {
        let next = self.prefix.take().or_else(|| self.message.take());
        std::task::Poll::Ready(next.map(|chunk| Ok(hyper::body::Frame::data(chunk))))
    }

    fn is_end_stream(&self) -> bool {
        self.prefix.is_none() && self.message.is_none()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        let left = self.prefix.as_ref().map_or(0, Bytes::len)
            + self.message.as_ref().map_or(0, Bytes::len);
        hyper::body::SizeHint::with_exact(left as u64)
    }
}

/// The response's decoder: the message is kept as its bytes.
#[derive(Debug, Clone, Copy)]
pub struct PassThrough;

impl Decoder for PassThrough {
    type Item = Bytes;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        // a slice of tonic's receive buffer, not a copy
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}

/// One prepared RPC and this process's channels to its server.
pub struct Client {
    endpoint: Endpoint,
    /// For `https://`: the TLS settings, the server's name and its address.
    tls: Option<(Arc<rustls::ClientConfig>, ServerName<'static>, String, u16)>,
    /// The RPC's path (tonic's channel adds the scheme and authority).
    uri: http::Uri,
    /// The request's headers: gRPC's own and the user's (as metadata), built once.
    headers: HeaderMap,
    connections: usize,
    channels: PerProcess<Arc<[Channel]>>,
    /// Which channel the next request takes, in turn.
    next: AtomicUsize,
    /// The RPC is `ModelStreamInfer`: one request out, responses until the final one.
    streaming: bool,
    /// With request compression: each body compressed once, by index.
    compressed: Option<Vec<Bytes>>,
}

/// gRPC's request compression (`grpc-encoding`), as `perf_analyzer --grpc-compression-algorithm`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    Gzip,
    Deflate,
}

impl Compression {
    /// `none` (no compression), `gzip` or `deflate`.
    pub fn parse(name: &str) -> Result<Option<Self>> {
        match name {
            "none" => Ok(None),
            "gzip" => Ok(Some(Compression::Gzip)),
            "deflate" => Ok(Some(Compression::Deflate)),
            other => Err(Error::InvalidArgument(format!(
                "grpc_compression must be 'none', 'gzip' or 'deflate', not {other:?}"
            ))),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Compression::Gzip => "gzip",
            Compression::Deflate => "deflate",
        }
    }

    /// `message` compressed (gRPC's `deflate` is zlib's format, as in HTTP).
    fn compress(self, message: &[u8]) -> Bytes {
        use std::io::Write;
        let level = flate2::Compression::default();
        let out = match self {
            Compression::Gzip => {
                let mut e = flate2::write::GzEncoder::new(Vec::new(), level);
                e.write_all(message).and_then(|()| e.finish())
            }
            Compression::Deflate => {
                let mut e = flate2::write::ZlibEncoder::new(Vec::new(), level);
                e.write_all(message).and_then(|()| e.finish())
            }
        };
        Bytes::from(out.unwrap_or_else(|e| unreachable!("writing to memory failed: {e}")))
    }
}

impl Client {
    /// Prepares `spec`'s RPC (its URL's path) on `connections` HTTP/2 connections.
    pub fn new(
        spec: &RequestSpec,
        config: &ClientConfig,
        connections: usize,
        compression: Option<Compression>,
    ) -> Result<Self> {
        if !(1..=MAX_CONNECTIONS).contains(&connections) {
            return Err(Error::InvalidArgument(format!(
                "grpc_connections must be from 1 to {MAX_CONNECTIONS}, not {connections}"
            )));
        }
        let port = spec.url.port_or_known_default().unwrap_or(80);
        // the host as a name or an address, without an IPv6 address's brackets
        let host = spec
            .url
            .host_str()
            .ok_or_else(|| Error::InvalidArgument(format!("{} names no host", spec.url)))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let tls = if spec.url.scheme() == "https" {
            let name = ServerName::try_from(host.clone()).map_err(|_| {
                Error::InvalidArgument(format!("{host:?} is not a TLS server name"))
            })?;
            Some((
                Arc::new(tls::rustls_config(config, b"h2")?),
                name,
                host,
                port,
            ))
        } else {
            None
        };
        let path = spec.url.path();
        let uri = http::Uri::builder()
            .path_and_query(path)
            .build()
            .map_err(|_| Error::InvalidArgument(format!("{path:?} is not a gRPC method path")))?;
        let compressed = compression.map(|c| {
            spec.bodies
                .iter()
                .map(|body| c.compress(&body.bytes))
                .collect::<Vec<_>>()
        });
        for body in compressed
            .iter()
            .flatten()
            .chain(spec.bodies.iter().map(|b| &b.bytes))
        {
            Framed::new(body.clone())?; // each fits a frame
        }
        let mut headers = request_headers(&spec.headers);
        headers.insert(
            "grpc-timeout",
            http::HeaderValue::from_str(&grpc_timeout(spec.timeout))
                .unwrap_or_else(|_| unreachable!("digits and a unit letter are a header value")),
        );
        if let Some(c) = compression {
            headers.insert("grpc-encoding", http::HeaderValue::from_static(c.name()));
        }
        let origin = format!(
            "{}://{}:{port}",
            spec.url.scheme(),
            spec.url.host_str().unwrap_or_default(),
        );
        let endpoint = Endpoint::from_shared(origin)
            .map_err(|e| Error::InvalidArgument(format!("invalid gRPC URL: {e}")))?
            .tcp_nodelay(true)
            .initial_stream_window_size(STREAM_WINDOW)
            .initial_connection_window_size(CONNECTION_WINDOW)
            .buffer_size(CHANNEL_BUFFER);
        Ok(Client {
            endpoint,
            tls,
            uri,
            headers,
            connections,
            channels: PerProcess::new(),
            next: AtomicUsize::new(0),
            streaming: path.ends_with(STREAM_RPC),
            compressed,
        })
    }

    /// This process's channels, connected on first use (on the runtime: a channel's task is
    /// spawned there).
    fn channel(&self) -> Channel {
        let channels = self
            .channels
            .get_or_try_init(|| {
                Ok::<_, std::convert::Infallible>(
                    (0..self.connections)
                        .map(|_| match &self.tls {
                            None => self.endpoint.connect_lazy(),
                            Some((config, name, host, port)) => {
                                let connector = tls_connector(
                                    tokio_rustls::TlsConnector::from(Arc::clone(config)),
                                    name.clone(),
                                    host.clone(),
                                    *port,
                                );
                                self.endpoint.connect_with_connector_lazy(connector)
                            }
                        })
                        .collect(),
                )
            })
            .unwrap_or_else(|never| match never {});
        let turn = self.next.fetch_add(1, Ordering::Relaxed);
        channels[turn % channels.len()].clone()
    }

    pub async fn exchange(
        &self,
        spec: &RequestSpec,
        index: usize,
        start: Instant,
        progress: &mut Progress<'_>,
    ) -> Result<Response> {
        use tower::{Service, ServiceExt};
        let framed = match &self.compressed {
            Some(bodies) => Framed::with_flag(bodies[index].clone(), true)?,
            None => Framed::new(spec.bodies[index].bytes.clone())?,
        };
        let mut request = http::Request::new(tonic::body::Body::new(framed));
        *request.method_mut() = http::Method::POST;
        *request.uri_mut() = self.uri.clone();
        *request.version_mut() = http::Version::HTTP_2;
        *request.headers_mut() = self.headers.clone();
        let mut channel = self.channel();
        let ready = channel.ready().await.map_err(|e| Error::Connect {
            url: spec.url.to_string(),
            reason: describe(&e),
        })?;
        let response = ready
            .call(request)
            .await
            .map_err(|e| status_error(spec, &Status::from_error(Box::new(e))))?;
        let ttfb = start.elapsed();
        progress.status = Some(response.status().as_u16());
        // an error status may already be in the head (a trailers-only response)
        if let Some(status) = Status::from_header_map(response.headers()) {
            if status.code() != Code::Ok {
                return Err(status_error(spec, &status));
            }
        }
        let (parts, body) = response.into_parts();
        let mut stream = tonic::codec::Streaming::new_response(
            PassThrough,
            body,
            parts.status,
            None,
            Some(spec.max_response_bytes),
        );
        if self.streaming {
            return Self::read_stream(spec, start, ttfb, &parts, &mut stream, progress).await;
        }
        let message = stream
            .message()
            .await
            .map_err(|s| status_error(spec, &s))?
            .ok_or_else(|| {
                Error::protocol("the gRPC response ended without a message (status OK)")
            })?;
        // the trailers, with the call's status
        if stream
            .message()
            .await
            .map_err(|s| status_error(spec, &s))?
            .is_some()
        {
            return Err(Error::protocol(
                "the gRPC response carries more than one message for a unary call",
            ));
        }
        let mut headers = parts.headers;
        if let Some(trailers) = stream.trailers().await.ok().flatten() {
            headers.extend(trailers.into_headers());
        }
        Ok(Response {
            status: parts.status.as_u16(),
            headers,
            length: message.len(),
            body: message,
            ttfb,
            total: start.elapsed(),
            resent: false,
        })
    }
}

impl Client {
    /// Reads a `ModelStreamInfer` answer: each message goes to the sink as it arrives, until the
    /// sink has the request's final response or the server ends the stream. The request went out
    /// whole as one message with the end of its stream (gRPC's half-close): Triton answers it and
    /// ends the call once the last response is sent. What stays unread when the sink is done
    /// (the trailers) is dropped with the stream, the call reset if it was still open.
    async fn read_stream(
        spec: &RequestSpec,
        start: Instant,
        ttfb: std::time::Duration,
        parts: &http::response::Parts,
        stream: &mut tonic::codec::Streaming<Bytes>,
        progress: &mut Progress<'_>,
    ) -> Result<Response> {
        let keep = progress.head(parts.status.as_u16(), &parts.headers);
        let mut length = 0usize;
        let mut kept = Vec::new();
        while !progress.finished() {
            let Some(message) = stream.message().await.map_err(|s| status_error(spec, &s))? else {
                break; // the call ended with status OK
            };
            length = length.saturating_add(message.len());
            progress.frame(&message, start)?;
            if keep {
                // the messages kept whole: together within the one response's limit
                if length > spec.max_response_bytes {
                    return Err(too_large(spec));
                }
                kept.push(message);
            }
        }
        let total = start.elapsed();
        let body = if kept.len() == 1 {
            kept.pop().unwrap_or_default()
        } else {
            Bytes::from(kept.concat())
        };
        Ok(Response {
            status: parts.status.as_u16(),
            headers: parts.headers.clone(),
            length,
            body,
            ttfb,
            total,
            resent: false,
        })
    }
}

/// The request's headers: gRPC's content type and `te`, and the user's as metadata (ASCII values;
/// `Authorization` stays sensitive) without those gRPC's framing states itself.
fn request_headers(headers: &HeaderMap) -> HeaderMap {
    let mut map = headers.clone();
    // what gRPC's framing states itself
    for reserved in [
        "content-type",
        "te",
        "user-agent",
        "grpc-timeout",
        "grpc-encoding",
    ] {
        map.remove(reserved);
    }
    map.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/grpc"),
    );
    map.insert(http::header::TE, http::HeaderValue::from_static("trailers"));
    map
}

/// The `grpc-timeout` header's value for `timeout` (gRPC over HTTP/2: at most 8 digits and a
/// unit, `H`, `M`, `S`, `m`, `u` or `n`): in the finest unit whose count fits 8 digits, rounded up,
/// so that the server's deadline is never before the client's own.
pub(crate) fn grpc_timeout(timeout: Duration) -> String {
    /// Each unit and its length in nanoseconds, finest first.
    const UNITS: [(char, u128); 6] = [
        ('n', 1),
        ('u', 1_000),
        ('m', 1_000_000),
        ('S', 1_000_000_000),
        ('M', 60_000_000_000),
        ('H', 3_600_000_000_000),
    ];
    const MOST: u128 = 99_999_999;
    let nanos = timeout.as_nanos().max(1);
    for (unit, length) in UNITS {
        let count = nanos.div_ceil(length);
        if count <= MOST {
            return format!("{count}{unit}");
        }
    }
    format!("{MOST}H") // over 11,000 years: the longest deadline the header can state
}

/// A status from the call as one of our errors: the server's own, named by code and message (its
/// DEADLINE_EXCEEDED: the deadline we sent passed, the timeout); a message over the limit; or the
/// connection's failure, as the HTTP transports name it.
pub(crate) fn status_error(spec: &RequestSpec, status: &Status) -> Error {
    let url = spec.url.to_string();
    // tonic's channel also keeps the deadline it sees in the header, until the response's head
    if status.code() == Code::DeadlineExceeded
        || chain_holds::<tonic::TimeoutExpired>(std::error::Error::source(status))
    {
        return Error::Timeout {
            url,
            seconds: spec.timeout.as_secs_f64(),
            deadline: true,
        };
    }
    if status.code() == Code::OutOfRange
        && status
            .message()
            .starts_with("Error, decoded message length too large")
    {
        return too_large(spec);
    }
    if let Some(problem) = tls::certificate_problem(std::error::Error::source(status)) {
        return Error::Certificate { url, problem };
    }
    if let Some(source) = std::error::Error::source(status) {
        // tonic's own status for a failure under it (connect, reset, GOAWAY): the cause is the news
        let reason = describe(source);
        return if never_connected(source) {
            Error::Connect { url, reason }
        } else {
            Error::Transport { url, reason }
        };
    }
    Error::Grpc {
        code: status.code() as i32,
        url,
        message: reason::grouped_body_reason(status.message().as_bytes()),
        excerpt: reason::body_excerpt(status.message().as_bytes()),
    }
}

/// A connector that opens TCP to `host:port` (whatever URI tonic asks for: always the endpoint's)
/// and speaks TLS over it, naming `name`.
fn tls_connector(
    tls: tokio_rustls::TlsConnector,
    name: ServerName<'static>,
    host: String,
    port: u16,
) -> impl tower::Service<
    http::Uri,
    Response = hyper_util::rt::TokioIo<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>,
    Error = std::io::Error,
    Future = impl Send,
> + Send
       + 'static {
    tower::service_fn(move |_: http::Uri| {
        let (tls, name, host) = (tls.clone(), name.clone(), host.clone());
        async move {
            let tcp = tokio::net::TcpStream::connect((host.as_str(), port)).await?;
            tcp.set_nodelay(true)?;
            Ok(hyper_util::rt::TokioIo::new(tls.connect(name, tcp).await?))
        }
    })
}

/// Whether `err` or one of its causes is a `T`.
fn chain_holds<T: std::error::Error + 'static>(
    err: Option<&(dyn std::error::Error + 'static)>,
) -> bool {
    let mut source = err;
    while let Some(e) = source {
        if e.is::<T>() {
            return true;
        }
        source = e.source();
    }
    false
}

/// Whether the failure is the connection's set-up: tonic's TCP connector says so in its message,
/// ours (TLS) with the connect's own `io::Error`. Not any error that mentions a connection: h2's
/// "error reading a body from connection" comes after the request went out.
fn never_connected(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut source = Some(err);
    while let Some(e) = source {
        if e.to_string().starts_with("tcp connect error") {
            return true;
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            use std::io::ErrorKind::{
                AddrNotAvailable, ConnectionRefused, HostUnreachable, NetworkUnreachable,
            };
            if matches!(
                io.kind(),
                ConnectionRefused | HostUnreachable | NetworkUnreachable | AddrNotAvailable
            ) {
                return true;
            }
        }
        source = e.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::strategy::Strategy as _;

    fn spec() -> RequestSpec {
        RequestSpec {
            method: reqwest::Method::POST,
            url: "http://127.0.0.1:8001/inference.GRPCInferenceService/ModelInfer"
                .parse()
                .unwrap(),
            headers: HeaderMap::new(),
            bodies: vec![super::super::Body::new(Bytes::from_static(b"msg"))],
            timeout: Duration::from_secs(1),
            max_response_bytes: 100,
        }
    }

    #[test]
    fn a_server_status_names_its_code_and_message() {
        let status = Status::new(
            Code::NotFound,
            "Request for unknown model: 'x7' is not found",
        );
        let err = status_error(&spec(), &status);
        assert_eq!(err.kind(), "grpc-status");
        let text = err.to_string();
        assert!(
            text.starts_with("gRPC NOT_FOUND (5) from http://127.0.0.1:8001/"),
            "{text}"
        );
        assert!(text.ends_with("unknown model: 'x#' is not found"), "{text}");
    }

    #[test]
    fn the_deadline_is_stated_in_the_finest_unit_that_fits_eight_digits() {
        for (timeout, value) in [
            (Duration::from_nanos(1), "1n"),
            (Duration::from_millis(5), "5000000n"),
            (Duration::from_nanos(99_999_999), "99999999n"),
            (Duration::from_nanos(100_000_001), "100001u"),
            (Duration::from_secs(60), "60000000u"),
            (Duration::from_secs(100), "100000m"),
            (Duration::from_secs(100_000), "100000S"),
            (Duration::from_secs(3_600 * 1_000_000), "60000000M"),
            (Duration::MAX, "99999999H"),
        ] {
            assert_eq!(grpc_timeout(timeout), value, "{timeout:?}");
        }
    }

    /// A server's DEADLINE_EXCEEDED is the deadline we sent passing: the timeout, in the words the
    /// client's own timer gives it.
    #[test]
    fn the_server_s_deadline_exceeded_is_the_timeout() {
        let err = status_error(&spec(), &Status::deadline_exceeded("Deadline Exceeded"));
        assert_eq!(err.kind(), "timeout");
        assert_eq!(
            err.to_string(),
            "no complete response from http://127.0.0.1:8001/inference.GRPCInferenceService/ModelInfer within 1 s (gRPC DEADLINE_EXCEEDED)"
        );
    }

    #[test]
    fn tonic_s_own_deadline_is_the_timeout() {
        let status = Status::from_error(Box::new(tonic::TimeoutExpired(())));
        assert_eq!(status_error(&spec(), &status).kind(), "timeout");
    }

    #[test]
    fn tonic_s_limit_is_the_response_too_large() {
        let status = Status::out_of_range(
            "Error, decoded message length too large: found 200 bytes, the limit is: 100 bytes",
        );
        assert_eq!(status_error(&spec(), &status).kind(), "too-large");
        // the same code from the server is the server's
        let status = Status::out_of_range("index 7 past the end");
        assert_eq!(status_error(&spec(), &status).kind(), "grpc-status");
    }

    #[test]
    fn a_failure_under_the_call_is_a_transport_or_connect_failure() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "tcp connect error");
        let status = Status::from_error(Box::new(io));
        assert_eq!(status_error(&spec(), &status).kind(), "connect");
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "stream reset");
        let status = Status::from_error(Box::new(io));
        assert_eq!(status_error(&spec(), &status).kind(), "transport");
    }

    #[test]
    fn headers_become_metadata_without_grpc_s_own() {
        let mut headers = HeaderMap::new();
        headers.insert("x-api-key", "k".parse().unwrap());
        headers.insert("content-type", "application/json".parse().unwrap());
        headers.insert("te", "gzip".parse().unwrap());
        let map = request_headers(&headers);
        assert_eq!(map.get("x-api-key").unwrap(), "k");
        assert_eq!(map.get("content-type").unwrap(), "application/grpc");
        assert_eq!(map.get("te").unwrap(), "trailers");
        assert_eq!(map.len(), 3);
    }

    /// What the test server does with a call.
    #[derive(Clone, Copy)]
    enum Answer {
        /// One message (framed), then status OK in the trailers.
        Message(&'static [u8]),
        /// A trailers-only response with this status.
        Status(u16, &'static str),
        /// RST_STREAM once the request is in.
        Reset,
        /// The response's head and part of its message, then the connection closes.
        Vanish,
        /// GOAWAY as the request's head arrives, and the connection closes.
        GoAway,
        /// Nothing: the request is read, the stream stays open, unanswered.
        Silent,
        /// These messages (each framed) on a `ModelStreamInfer` call, then `Then`; a fault only
        /// once the client has read them all (a permit each in the semaphore: h2 drops data it has
        /// not handed over when a reset arrives).
        Stream(&'static [Bytes], Then, &'static tokio::sync::Semaphore),
    }

    /// How a streamed answer ends after its messages.
    #[derive(Clone, Copy, Debug)]
    enum Then {
        /// Status OK in the trailers.
        Trailers,
        /// Nothing more: the stream stays open.
        Hold,
        /// RST_STREAM.
        Reset,
        /// The connection closes.
        Vanish,
        /// GOAWAY, and the connection closes.
        GoAway,
    }

    /// What the test server saw: each call's headers and body, and the connections it accepted.
    struct Seen {
        calls: tokio::sync::mpsc::UnboundedReceiver<(HeaderMap, Vec<u8>)>,
        connections: Arc<AtomicUsize>,
    }

    /// A gRPC server on h2 that answers every call with `answer` and sends each request's whole
    /// body (frame prefix included) and its headers to the returned channel.
    async fn serve(answer: Answer) -> (u16, Seen) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let connections = Arc::new(AtomicUsize::new(0));
        let accepted = Arc::clone(&connections);
        tokio::spawn(async move {
            loop {
                let (socket, _) = listener.accept().await.unwrap();
                accepted.fetch_add(1, Ordering::SeqCst);
                let tx = tx.clone();
                tokio::spawn(async move {
                    let mut conn = h2::server::handshake(socket).await.unwrap();
                    let close = Arc::new(tokio::sync::Notify::new());
                    let goaway = Arc::new(tokio::sync::Notify::new());
                    loop {
                        let next = tokio::select! {
                            next = conn.accept() => next,
                            () = close.notified() => return, // drops the connection
                            () = goaway.notified() => {
                                conn.abrupt_shutdown(h2::Reason::INTERNAL_ERROR);
                                while conn.accept().await.is_some() {}
                                return;
                            }
                        };
                        let Some(Ok((request, mut respond))) = next else {
                            return;
                        };
                        if let Answer::GoAway = answer {
                            tx.send((request.headers().clone(), Vec::new())).unwrap();
                            goaway.notify_one(); // the select above sends it
                            continue;
                        }
                        let (tx, close, goaway) =
                            (tx.clone(), Arc::clone(&close), Arc::clone(&goaway));
                        tokio::spawn(async move {
                            let (parts, mut body) = request.into_parts();
                            let mut got = Vec::new();
                            while let Some(chunk) = body.data().await {
                                let chunk = chunk.unwrap();
                                body.flow_control().release_capacity(chunk.len()).unwrap();
                                got.extend_from_slice(&chunk);
                            }
                            tx.send((parts.headers, got)).unwrap();
                            match answer {
                                Answer::Status(code, message) => {
                                    respond
                                        .send_response(head(Some((code, message))), true)
                                        .unwrap();
                                }
                                Answer::Message(message) => {
                                    let mut send =
                                        respond.send_response(head(None), false).unwrap();
                                    let mut frame = vec![0];
                                    frame.extend_from_slice(&(message.len() as u32).to_be_bytes());
                                    frame.extend_from_slice(message);
                                    send.send_data(frame.into(), false).unwrap();
                                    let mut trailers = HeaderMap::new();
                                    trailers.insert("grpc-status", "0".parse().unwrap());
                                    send.send_trailers(trailers).unwrap();
                                }
                                Answer::Reset => respond.send_reset(h2::Reason::INTERNAL_ERROR),
                                Answer::Vanish => {
                                    let mut send =
                                        respond.send_response(head(None), false).unwrap();
                                    send.send_data(vec![0, 0, 0, 0, 100, 1, 2].into(), false)
                                        .unwrap();
                                    close.notify_one();
                                }
                                Answer::Stream(messages, then, read) => {
                                    let send = respond.send_response(head(None), false).unwrap();
                                    stream_answer(send, messages, then, read, &close, &goaway)
                                        .await;
                                }
                                Answer::GoAway => unreachable!("answered on the connection"),
                                // `respond` kept, unused: the stream stays open
                                Answer::Silent => std::future::pending().await,
                            }
                        });
                    }
                });
            }
        });
        (
            port,
            Seen {
                calls: rx,
                connections,
            },
        )
    }

    /// A response's head: gRPC's content type, and `status` (code and message) for a
    /// trailers-only response.
    fn head(status: Option<(u16, &str)>) -> http::Response<()> {
        let mut r = http::Response::builder()
            .status(200)
            .header("content-type", "application/grpc");
        if let Some((code, message)) = status {
            r = r
                .header("grpc-status", code)
                .header("grpc-message", message);
        }
        r.body(()).unwrap()
    }

    /// Sends `messages` framed, then ends as `then` says (a fault once the client read them all).
    async fn stream_answer(
        mut send: h2::SendStream<Bytes>,
        messages: &[Bytes],
        then: Then,
        read: &tokio::sync::Semaphore,
        close: &tokio::sync::Notify,
        goaway: &tokio::sync::Notify,
    ) {
        for message in messages {
            let mut frame = vec![0];
            frame.extend_from_slice(&(message.len() as u32).to_be_bytes());
            frame.extend_from_slice(message);
            send.send_data(frame.into(), false).unwrap();
        }
        if matches!(then, Then::Reset | Then::Vanish | Then::GoAway) {
            let all = u32::try_from(messages.len()).unwrap();
            read.acquire_many(all).await.unwrap().forget();
        }
        match then {
            Then::Trailers => {
                let mut trailers = HeaderMap::new();
                trailers.insert("grpc-status", "0".parse().unwrap());
                send.send_trailers(trailers).unwrap();
            }
            Then::Hold => std::future::pending::<()>().await, // open until the client goes
            Then::Reset => send.send_reset(h2::Reason::INTERNAL_ERROR),
            Then::Vanish => close.notify_one(),
            Then::GoAway => goaway.notify_one(),
        }
    }

    fn spec_for(port: u16, body: &'static [u8], limit: usize) -> RequestSpec {
        let mut headers = HeaderMap::new();
        headers.insert("x-api-key", "secret".parse().unwrap());
        RequestSpec {
            url: format!("http://127.0.0.1:{port}/inference.GRPCInferenceService/ModelInfer")
                .parse()
                .unwrap(),
            headers,
            bodies: vec![super::super::Body::new(Bytes::from_static(body))],
            max_response_bytes: limit,
            ..spec()
        }
    }

    async fn call(spec: &RequestSpec) -> Result<Response, super::super::Failure> {
        let transport =
            super::super::Transport::grpc(spec, &ClientConfig::default(), 1, None).unwrap();
        transport.send(spec, 0).await
    }

    /// The prepared message goes out as one gRPC frame (uncompressed flag, big-endian length, the
    /// bytes unchanged) on the RPC's path with the user's metadata, and the answer's message comes
    /// back as it was sent.
    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn the_message_goes_out_framed_and_unchanged_and_comes_back_so() {
        let (port, mut seen) = serve(Answer::Message(b"\x0a\x01m\x32\x00")).await;
        let spec = spec_for(port, b"\x0a\x05model\x3a\x03\x0a\x01o", 1024);
        let response = call(&spec).await.unwrap();
        assert_eq!(&response.body[..], b"\x0a\x01m\x32\x00");
        assert!(response.ttfb <= response.total);
        let (headers, body) = seen.calls.recv().await.unwrap();
        assert_eq!(&body[..5], &[0, 0, 0, 0, 12]);
        assert_eq!(&body[5..], b"\x0a\x05model\x3a\x03\x0a\x01o");
        assert_eq!(headers.get("x-api-key").unwrap(), "secret");
        assert_eq!(headers.get("content-type").unwrap(), "application/grpc");
        assert_eq!(headers.get("grpc-timeout").unwrap(), "1000000u"); // the spec's 1 s
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn a_status_from_the_server_is_a_failure_naming_it() {
        let (port, _seen) = serve(Answer::Status(5, "unknown model 'x'")).await;
        let failure = call(&spec_for(port, b"", 1024)).await.unwrap_err();
        assert_eq!(
            failure.error.to_string(),
            format!(
                "gRPC NOT_FOUND (5) from http://127.0.0.1:{port}/inference.GRPCInferenceService/ModelInfer: unknown model 'x'"
            )
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn a_message_over_the_limit_is_refused() {
        let (port, _seen) = serve(Answer::Message(&[7; 101])).await;
        let failure = call(&spec_for(port, b"", 100)).await.unwrap_err();
        assert_eq!(failure.error.kind(), "too-large", "{}", failure.error);
        let (port, _seen) = serve(Answer::Message(&[7; 100])).await;
        assert_eq!(
            call(&spec_for(port, b"", 100)).await.unwrap().body.len(),
            100
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn no_server_is_a_connect_failure() {
        let port = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap().port()
        };
        let failure = call(&spec_for(port, b"", 100)).await.unwrap_err();
        assert_eq!(failure.error.kind(), "connect", "{}", failure.error);
    }

    /// A stream reset, a connection gone mid-response and a GOAWAY are each a transport failure
    /// of the one call the server received: never resent.
    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn a_reset_a_vanished_server_and_a_goaway_fail_the_one_call_sent() {
        for (answer, reason) in [
            (
                Answer::Reset,
                "stream error received: unexpected internal error encountered",
            ),
            // whether h2 reads the bytes that came before the close or meets the closed socket
            // first is a race: its words differ, the failure does not
            (Answer::Vanish, "request to"),
            // after the GOAWAY, h2 meets the closed connection ("connection error: stream closed
            // because of a broken pipe") or, in about one run in five, the server's h2 cancels the
            // stream first ("stream error received: stream no longer needed"): the words race, the
            // failure (a transport one, of the one call sent) does not
            (Answer::GoAway, "transport error: "),
        ] {
            let (port, mut seen) = serve(answer).await;
            let failure = call(&spec_for(port, b"msg", 1024)).await.unwrap_err();
            assert_eq!(failure.error.kind(), "transport", "{}", failure.error);
            assert!(
                failure.error.to_string().contains(reason),
                "{}",
                failure.error
            );
            assert!(!failure.resent);
            assert!(seen.calls.recv().await.is_some());
            assert!(
                seen.calls.try_recv().is_err(),
                "sent twice: {}",
                failure.error
            );
        }
    }

    /// An unanswered call ends at its deadline, the one it sent: a timeout named as gRPC names it
    /// (whether our timer or tonic's, which reads the header, ends it first).
    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn an_unanswered_call_ends_at_the_deadline_it_sent() {
        let (port, mut seen) = serve(Answer::Silent).await;
        let mut spec = spec_for(port, b"msg", 1024);
        spec.timeout = Duration::from_millis(50);
        let failure = call(&spec).await.unwrap_err();
        assert_eq!(failure.error.kind(), "timeout", "{}", failure.error);
        assert_eq!(
            failure.error.to_string(),
            format!(
                "no complete response from {} within 0.05 s (gRPC DEADLINE_EXCEEDED)",
                spec.url
            )
        );
        let (headers, _) = seen.calls.recv().await.unwrap();
        assert_eq!(headers.get("grpc-timeout").unwrap(), "50000000n");
    }

    /// The users of a process share `connections` HTTP/2 connections, taken in turn.
    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn requests_take_the_connections_in_turn() {
        for connections in [1, 3] {
            let (port, seen) = serve(Answer::Message(b"")).await;
            let spec = spec_for(port, b"msg", 1024);
            let transport =
                super::super::Transport::grpc(&spec, &ClientConfig::default(), connections, None)
                    .unwrap();
            for _ in 0..6 {
                transport.send(&spec, 0).await.unwrap();
            }
            assert_eq!(seen.connections.load(Ordering::SeqCst), connections);
        }
    }

    /// A `ModelStreamInferResponse` carrying one INT32 output (none when `index` is None), final
    /// when `last`; or the server's error.
    fn stream_message(index: Option<i32>, last: bool, error: &str) -> Bytes {
        use crate::protocol::grpc::pb;
        let mut response = pb::ModelInferResponse::default();
        if let Some(i) = index {
            response
                .outputs
                .push(pb::model_infer_response::InferOutputTensor {
                    name: "INDEX".into(),
                    datatype: "INT32".into(),
                    shape: vec![1],
                    ..Default::default()
                });
            response
                .raw_output_contents
                .push(Bytes::copy_from_slice(&i.to_le_bytes()));
        }
        if last {
            response.parameters.insert(
                crate::protocol::grpc::FINAL_RESPONSE.into(),
                pb::InferParameter {
                    parameter_choice: Some(pb::infer_parameter::ParameterChoice::BoolParam(true)),
                },
            );
        }
        prost::Message::encode_to_vec(&pb::ModelStreamInferResponse {
            error_message: error.into(),
            infer_response: Some(response),
        })
        .into()
    }

    fn leak(messages: Vec<Bytes>) -> &'static [Bytes] {
        Box::leak(messages.into_boxed_slice())
    }

    /// Three responses, then Triton's empty final response.
    fn three_then_final() -> Vec<Bytes> {
        let mut m: Vec<Bytes> = (0..3).map(|i| stream_message(Some(i), false, "")).collect();
        m.push(stream_message(None, true, ""));
        m
    }

    /// A `ModelStreamInfer` call read by the generative reader as a decoupled tensor model's:
    /// its tokens and verdict, and what the server saw.
    async fn stream_call(
        messages: Vec<Bytes>,
        then: Then,
        limit: usize,
    ) -> (crate::protocol::generative::Tokens, Result<()>, Seen) {
        use crate::protocol::generative::{Api, Reader};
        /// The reader, adding a permit for each message it is handed.
        struct Counted<'a>(&'a mut Reader, &'static tokio::sync::Semaphore);
        impl super::super::BodySink for Counted<'_> {
            fn head(&mut self, status: u16, headers: &HeaderMap) -> bool {
                self.0.head(status, headers)
            }
            fn frame(&mut self, data: &[u8], at: Duration) -> Result<()> {
                self.1.add_permits(1);
                self.0.frame(data, at)
            }
            fn finished(&self) -> bool {
                self.0.finished()
            }
        }
        let read = Box::leak(Box::new(tokio::sync::Semaphore::new(0)));
        let (port, seen) = serve(Answer::Stream(leak(messages), then, read)).await;
        let mut spec = spec_for(port, b"msg", limit);
        spec.url =
            format!("http://127.0.0.1:{port}/inference.GRPCInferenceService/ModelStreamInfer")
                .parse()
                .unwrap();
        let transport =
            super::super::Transport::grpc(&spec, &ClientConfig::default(), 1, None).unwrap();
        let mut reader = Reader::new(Api::GrpcStream, true, spec.url.to_string(), limit, false);
        let mut counted = Counted(&mut reader, read);
        let sent = transport.send_to(&spec, 0, Some(&mut counted)).await;
        let (tokens, verdict) = match sent {
            Ok(response) => reader.finish(&response.body),
            Err(failure) => {
                assert!(!failure.resent);
                (reader.into_tokens(), Err(failure.error))
            }
        };
        (tokens, verdict, seen)
    }

    /// Each response is timed as it arrives and the final-response flag ends the request, whether
    /// the server then closes the call or keeps it open.
    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn a_stream_is_read_to_its_final_response() {
        for then in [Then::Trailers, Then::Hold] {
            let (tokens, verdict, mut seen) = stream_call(three_then_final(), then, 1024).await;
            verdict.unwrap();
            assert_eq!((tokens.chunks, tokens.times.len()), (3, 3), "{then:?}");
            assert!(tokens.streamed);
            assert!(seen.calls.recv().await.is_some());
        }
    }

    /// A stream that ends without the final response, or carries an error, fails; the responses
    /// before count.
    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn a_stream_without_its_final_response_or_with_an_error_fails_counting_what_came() {
        let mut two: Vec<Bytes> = three_then_final()[..2].to_vec();
        let (tokens, verdict, _) = stream_call(two.clone(), Then::Trailers, 1024).await;
        let err = verdict.unwrap_err();
        assert_eq!(err.kind(), "stream");
        assert!(
            err.to_string()
                .ends_with("the stream ended before Triton's final response"),
            "{err}"
        );
        assert_eq!(tokens.chunks, 2);
        two.push(stream_message(None, false, "model pulse: out of memory"));
        let (tokens, verdict, _) = stream_call(two, Then::Hold, 1024).await;
        let err = verdict.unwrap_err();
        assert!(
            err.to_string()
                .ends_with("the server sent an error: model pulse: out of memory"),
            "{err}"
        );
        assert_eq!(tokens.chunks, 2);
    }

    /// A reset, a vanished server and a GOAWAY mid-stream fail the one call sent, never resent,
    /// the responses before it counted; so does a deadline passed, and a response over the limit.
    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn faults_mid_stream_fail_the_one_call_counting_what_came() {
        let two = three_then_final()[..2].to_vec();
        for (then, kind) in [
            (Then::Reset, "transport"),
            (Then::Vanish, "transport"),
            (Then::GoAway, "transport"),
            (Then::Hold, "timeout"),
        ] {
            let (tokens, verdict, mut seen) = stream_call(two.clone(), then, 1024).await;
            let err = verdict.unwrap_err();
            assert_eq!(err.kind(), kind, "{then:?}: {err}");
            assert_eq!(tokens.chunks, 2, "{then:?}");
            assert!(seen.calls.recv().await.is_some());
            assert!(seen.calls.try_recv().is_err(), "sent twice: {err}");
        }
        let mut big = three_then_final();
        big.insert(1, stream_message(Some(7), false, &"x".repeat(200)));
        let (tokens, verdict, _) = stream_call(big, Then::Trailers, 100).await;
        assert_eq!(verdict.unwrap_err().kind(), "too-large");
        assert_eq!(tokens.chunks, 1);
    }

    proptest::proptest! {
        /// Any timeout (each power of two up to 2^93 ns, about 3e11 years, as likely): 1 to 8
        /// digits and a unit letter, in the finest unit that fits (one finer would need more than 8
        /// digits), rounded up: never shorter than the timeout, by less than one unit longer.
        #[test]
        fn the_grpc_timeout_is_well_formed_and_never_shorter(
            nanos in (0u32..93).prop_flat_map(|bits| (1u128 << bits)..(1u128 << (bits + 1)))
        ) {
            use proptest::prop_assert;
            const LENGTHS: [(&str, u128); 6] = [
                ("n", 1),
                ("u", 1_000),
                ("m", 1_000_000),
                ("S", 1_000_000_000),
                ("M", 60_000_000_000),
                ("H", 3_600_000_000_000),
            ];
            let timeout = Duration::new(
                u64::try_from(nanos / 1_000_000_000).unwrap(),
                u32::try_from(nanos % 1_000_000_000).unwrap(),
            );
            let value = grpc_timeout(timeout);
            let (digits, unit) = value.split_at(value.len() - 1);
            prop_assert!((1..=8).contains(&digits.len()), "{}", value);
            prop_assert!(digits.bytes().all(|b| b.is_ascii_digit()), "{}", value);
            let at = LENGTHS.iter().position(|(u, _)| *u == unit);
            prop_assert!(at.is_some(), "{}", value);
            let at = at.unwrap();
            let length = LENGTHS[at].1;
            let count: u128 = digits.parse().unwrap();
            if nanos <= 99_999_999 * LENGTHS[5].1 {
                let stated = count * length;
                prop_assert!(stated >= nanos && stated - nanos < length, "{} for {} ns", value, nanos);
            } else {
                prop_assert!(value == "99999999H", "{} for {} ns", value, nanos);
            }
            if at > 0 {
                prop_assert!(nanos.div_ceil(LENGTHS[at - 1].1) > 99_999_999, "{} for {} ns", value, nanos);
            }
        }
    }
}
