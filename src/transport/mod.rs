//! How a prepared request goes over the wire: [`plain`] (hyper's HTTP/1.1 connections) for
//! `http://`, [`tls`] (reqwest with rustls) for `https://`, behind one [`Transport`] with one
//! timeout. Over `http://` the bodies are sent without copying them ([`zero_copy`]).
//!
//! A 3xx answer is a failed request naming its `Location`, on both transports: never followed, so
//! the body and the user's headers (an API key in `--header`) go to no host the user did not name.
//!
//! No transport sends a request twice when the server may have received it. A request is sent
//! again, on a new connection, only when the pooled connection it was given turned out closed
//! before any byte of it was written; the [`Response`] says so, and the run counts it.

pub mod grpc;
pub mod plain;
#[cfg(test)]
pub(crate) mod script;
pub mod tls;
pub mod zero_copy;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use bytes::Bytes;
use reqwest::header::{HeaderMap, LOCATION};
use reqwest::{Method, Url};

use crate::error::{Error, Result};

/// TLS settings of an `https://` endpoint.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ClientConfig {
    /// Skip certificate verification (`--insecure`).
    pub insecure: bool,
    /// Extra PEM CA bundle to trust.
    pub ca_file: Option<PathBuf>,
}

/// One prepared body and the headers that belong to it alone (such as the length of a Triton
/// binary request's JSON header), on top of the [`RequestSpec`]'s own.
#[derive(Debug, Clone, Default)]
pub struct Body {
    /// Encoded once; every send clones the handle, never the bytes.
    pub bytes: Bytes,
    pub headers: HeaderMap,
}

impl Body {
    pub fn new(bytes: Bytes) -> Self {
        Body {
            bytes,
            headers: HeaderMap::new(),
        }
    }
}

/// Everything needed to send one request, prepared once and shared by every send: one of
/// `bodies` goes out each time, chosen by the caller.
#[derive(Debug, Clone)]
pub struct RequestSpec {
    pub method: Method,
    pub url: Url,
    pub headers: HeaderMap,
    /// Never empty.
    pub bodies: Vec<Body>,
    pub timeout: Duration,
    pub max_response_bytes: usize,
}

/// A complete response and its timing.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: HeaderMap,
    /// Empty when a sink read the body instead (see [`BodySink::head`]).
    pub body: Bytes,
    /// How many body bytes arrived.
    pub length: usize,
    /// From just before the request is handed to the connection to the response head.
    pub ttfb: Duration,
    /// From the same instant to the last byte of the body.
    pub total: Duration,
    /// Whether the request went out on a second connection because the pooled one was closed
    /// before any byte of the request was written.
    pub resent: bool,
}

/// A failed send and how long it took to fail.
#[derive(Debug)]
pub struct Failure {
    pub error: Error,
    pub elapsed: Duration,
    pub status: Option<u16>,
    pub resent: bool,
}

/// Reads a response body as it arrives, on the I/O thread (a streaming endpoint's events): what
/// it gathered stays with its owner when the exchange fails or times out part way.
pub trait BodySink: Send {
    /// The response head arrived. Returns whether the transport should still gather the body
    /// into `Response::body`: false when the sink reads it all (a stream held whole would grow
    /// with its length, for nothing).
    fn head(&mut self, status: u16, headers: &HeaderMap) -> bool;
    /// A frame of the body arrived, `at` after the send started (the clock of `Response::total`).
    /// An error ends the exchange with it (the connection is closed, not pooled).
    fn frame(&mut self, data: &[u8], at: Duration) -> Result<()>;
    /// Whether the answer is complete though its stream is not (gRPC `ModelStreamInfer`: Triton's
    /// final-response flag arrived): the transport stops reading.
    fn finished(&self) -> bool {
        false
    }
}

/// What one exchange knows when it fails or times out: set as the exchange goes.
#[derive(Default)]
pub struct Progress<'a> {
    /// The response status, once the head is in.
    pub status: Option<u16>,
    pub resent: bool,
    /// Given each frame of the body as it arrives, when the endpoint asks (streaming endpoints
    /// only: nothing is timed per frame otherwise).
    pub sink: Option<&'a mut dyn BodySink>,
}

impl Progress<'_> {
    /// Hands the head to the sink, if any; whether to gather the body (see [`BodySink::head`]).
    pub(crate) fn head(&mut self, status: u16, headers: &HeaderMap) -> bool {
        self.status = Some(status);
        match self.sink.as_deref_mut() {
            Some(sink) => sink.head(status, headers),
            None => true,
        }
    }

    /// Whether the sink has the whole answer (see [`BodySink::finished`]).
    pub(crate) fn finished(&self) -> bool {
        self.sink.as_deref().is_some_and(BodySink::finished)
    }

    /// Hands a body frame to the sink, if any, stamped with its arrival from `start`.
    pub(crate) fn frame(&mut self, data: &[u8], start: Instant) -> Result<()> {
        match self.sink.as_deref_mut() {
            Some(sink) => sink.frame(data, start.elapsed()),
            None => Ok(()),
        }
    }
}

/// How an endpoint's requests are sent.
pub enum Transport {
    /// `http://`: hyper's HTTP/1.1 client connections, pooled.
    Plain(plain::Client),
    /// `https://`: reqwest with rustls.
    Tls(tls::Client),
    /// gRPC: tonic's HTTP/2 channels, the URL's path naming the RPC.
    Grpc(Box<grpc::Client>),
}

impl Transport {
    /// The transport for `spec`'s URL; `config` applies to `https://` only. With `zero_copy`, an
    /// `http://` transport moves the bodies of `spec` that [`zero_copy::seal`] takes (up to 1 MiB
    /// each, 256 MiB in all) into a sealed memfd and sends them with `sendfile`.
    pub fn new(spec: &mut RequestSpec, config: ClientConfig, zero_copy: bool) -> Result<Self> {
        if spec.url.scheme() == "https" {
            Ok(Transport::Tls(tls::Client::new(config)?))
        } else {
            let sealed = if zero_copy {
                zero_copy::seal(&mut spec.bodies)
            } else {
                None
            };
            Ok(Transport::Plain(plain::Client::new(spec, sealed)?))
        }
    }

    /// The gRPC transport for `spec` (each body a complete message for the RPC its URL's path
    /// names), on `connections` HTTP/2 connections per process, each message compressed with
    /// `compression` when given.
    pub fn grpc(
        spec: &RequestSpec,
        config: &ClientConfig,
        connections: usize,
        compression: Option<grpc::Compression>,
    ) -> Result<Self> {
        Ok(Transport::Grpc(Box::new(grpc::Client::new(
            spec,
            config,
            connections,
            compression,
        )?)))
    }

    /// Whether any bodies go out with `sendfile` from a sealed memfd.
    pub fn zero_copy(&self) -> bool {
        match self {
            Transport::Plain(client) => client.zero_copy(),
            Transport::Tls(_) | Transport::Grpc(_) => false,
        }
    }

    /// Sends the request with body `index` (taken modulo the number of bodies) and reads the whole
    /// response, within `spec.timeout` and `spec.max_response_bytes`.
    pub async fn send(&self, spec: &RequestSpec, index: usize) -> Result<Response, Failure> {
        self.send_to(spec, index, None).await
    }

    /// [`Transport::send`], giving the head and each body frame to `sink` as they arrive.
    pub async fn send_to(
        &self,
        spec: &RequestSpec,
        index: usize,
        sink: Option<&mut dyn BodySink>,
    ) -> Result<Response, Failure> {
        let index = index % spec.bodies.len();
        let start = Instant::now();
        let mut progress = Progress {
            sink,
            ..Progress::default()
        };
        let exchange = async {
            match self {
                Transport::Plain(client) => {
                    client.exchange(spec, index, start, &mut progress).await
                }
                Transport::Tls(client) => client.exchange(spec, index, start, &mut progress).await,
                Transport::Grpc(client) => client.exchange(spec, index, start, &mut progress).await,
            }
        };
        let error = match tokio::time::timeout(spec.timeout, exchange).await {
            Ok(Ok(response)) if (300..400).contains(&response.status) => Error::Redirect {
                status: response.status,
                url: spec.url.to_string(),
                location: location(&response.headers),
            },
            Ok(Ok(response)) => return Ok(response),
            Ok(Err(error)) => error,
            Err(_) => Error::Timeout {
                url: spec.url.to_string(),
                seconds: spec.timeout.as_secs_f64(),
                deadline: matches!(self, Transport::Grpc(_)),
            },
        };
        Err(Failure {
            error,
            elapsed: start.elapsed(),
            status: progress.status,
            resent: progress.resent,
        })
    }
}

/// A redirect's `Location` as it can be shown: printable, and cut after [`MAX_LOCATION_CHARS`].
fn location(headers: &HeaderMap) -> String {
    /// Enough for any real URL; a hostile server's megabyte stays out of logs and failure lists.
    const MAX_LOCATION_CHARS: usize = 300;
    let Some(value) = headers.get(LOCATION) else {
        return "(no Location header)".into();
    };
    let text = String::from_utf8_lossy(value.as_bytes());
    let mut shown: String = text
        .chars()
        .take(MAX_LOCATION_CHARS)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    if text.chars().nth(MAX_LOCATION_CHARS).is_some() {
        shown.push('…');
    }
    shown
}

/// A transport failure of `spec`'s request.
pub(crate) fn failed(spec: &RequestSpec, reason: impl Into<String>) -> Error {
    Error::Transport {
        url: spec.url.to_string(),
        reason: reason.into(),
    }
}

/// Why a body that announced `length` bytes ended before them (no count of what did arrive, which
/// varies: one reason per server answer keeps Locust's failures in one group).
pub(crate) fn cut_short(length: usize, reason: &str) -> String {
    format!("response cut short, before the {length} bytes it announced: {reason}")
}

/// The response body is over `spec.max_response_bytes`.
pub(crate) fn too_large(spec: &RequestSpec) -> Error {
    Error::TooLarge {
        url: spec.url.to_string(),
        limit: spec.max_response_bytes,
    }
}

/// An error and its causes, each once, joined by ": " (the useful part, such as "connection
/// refused", often lives deep in the chain).
pub(crate) fn describe(err: &dyn std::error::Error) -> String {
    let mut reason = String::new();
    let mut source: Option<&dyn std::error::Error> = Some(err);
    while let Some(e) = source {
        let text = e.to_string();
        if !reason.contains(&text) {
            if !reason.is_empty() {
                reason.push_str(": ");
            }
            reason.push_str(&text);
        }
        source = e.source();
    }
    reason
}

#[cfg(test)]
mod tests {
    use reqwest::header::HeaderValue;

    use super::*;

    fn shown(value: &[u8]) -> String {
        let mut headers = HeaderMap::new();
        headers.insert(LOCATION, HeaderValue::from_bytes(value).unwrap());
        location(&headers)
    }

    #[test]
    fn a_location_is_shown_printable_and_cut() {
        assert_eq!(shown(b"http://other:8000/v2"), "http://other:8000/v2");
        assert_eq!(shown(b"http://a/\tb\xffc"), "http://a/?b\u{fffd}c");
        let long = format!("http://a/{}", "x".repeat(1000));
        let cut = shown(long.as_bytes());
        assert_eq!(cut.chars().count(), 301);
        assert!(cut.ends_with("x…"), "{cut}");
        assert_eq!(location(&HeaderMap::new()), "(no Location header)");
    }

    /// An error wrapping `source`, showing `text`.
    #[derive(Debug)]
    struct Chain {
        text: &'static str,
        source: Option<Box<Chain>>,
    }

    impl std::fmt::Display for Chain {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.text)
        }
    }

    impl std::error::Error for Chain {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            self.source.as_deref().map(|e| e as _)
        }
    }

    fn chain(texts: &[&'static str]) -> Chain {
        let mut error = None;
        for text in texts.iter().rev() {
            error = Some(Chain {
                text,
                source: error.map(Box::new),
            });
        }
        error.unwrap()
    }

    /// The cause deep in the chain is shown, and a cause its wrapper already quotes only once.
    #[test]
    fn an_error_is_described_with_each_cause_once() {
        let err = chain(&[
            "error sending request",
            "client error (Connect)",
            "connection refused",
        ]);
        assert_eq!(
            describe(&err),
            "error sending request: client error (Connect): connection refused"
        );
        let quoted = chain(&[
            "tcp connect error: connection refused",
            "connection refused",
        ]);
        assert_eq!(describe(&quoted), "tcp connect error: connection refused");
        assert_eq!(describe(&chain(&["alone"])), "alone");
    }

    struct Gather {
        frames: Vec<Vec<u8>>,
        keep: bool,
        refuse_after: usize,
    }

    impl BodySink for Gather {
        fn head(&mut self, _status: u16, _headers: &HeaderMap) -> bool {
            self.keep
        }

        fn frame(&mut self, data: &[u8], _at: Duration) -> Result<()> {
            if self.frames.len() == self.refuse_after {
                return Err(Error::Runtime("refused".into()));
            }
            self.frames.push(data.to_vec());
            Ok(())
        }
    }

    /// Without a sink the body is gathered and frames go nowhere; with one, it decides whether the
    /// body is gathered, gets every frame, and its error ends the exchange. The status is kept
    /// either way, for a failure that comes after the head.
    #[test]
    fn progress_hands_the_head_and_frames_to_the_sink() {
        let start = Instant::now();
        let mut bare = Progress::default();
        assert!(bare.head(200, &HeaderMap::new()));
        assert!(bare.frame(b"x", start).is_ok());
        assert_eq!(bare.status, Some(200));

        let mut sink = Gather {
            frames: Vec::new(),
            keep: false,
            refuse_after: 2,
        };
        let mut progress = Progress {
            sink: Some(&mut sink),
            ..Progress::default()
        };
        assert!(!progress.head(206, &HeaderMap::new()));
        assert!(progress.frame(b"a", start).is_ok());
        assert!(progress.frame(b"b", start).is_ok());
        assert!(progress.frame(b"c", start).is_err());
        assert_eq!(progress.status, Some(206));
        assert_eq!(sink.frames, [b"a".to_vec(), b"b".to_vec()]);
    }

    /// The failure texts name the URL and the numbers, never what arrived (which varies and
    /// would split Locust's failure groups).
    #[test]
    fn failures_name_the_url_and_the_limit() {
        let spec = RequestSpec {
            method: Method::POST,
            url: "http://127.0.0.1:1/v2/models/m/infer".parse().unwrap(),
            headers: HeaderMap::new(),
            bodies: vec![Body::new(Bytes::from_static(b"x"))],
            timeout: Duration::from_secs(1),
            max_response_bytes: 4096,
        };
        let Error::TooLarge { url, limit } = too_large(&spec) else {
            panic!("not TooLarge")
        };
        assert_eq!(
            (url.as_str(), limit),
            ("http://127.0.0.1:1/v2/models/m/infer", 4096)
        );
        assert_eq!(
            cut_short(10, "connection reset"),
            "response cut short, before the 10 bytes it announced: connection reset"
        );
        let Error::Transport { url, reason } = failed(&spec, "gone") else {
            panic!("not Transport")
        };
        assert_eq!(
            (url.as_str(), reason.as_str()),
            ("http://127.0.0.1:1/v2/models/m/infer", "gone")
        );
    }
}
