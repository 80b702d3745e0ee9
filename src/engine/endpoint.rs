//! What Locust users send: an [`Endpoint`] (one prepared request with one or more bodies, shared
//! by all users of a process), how it runs one request on the I/O runtime, and the [`Outcome`] of
//! each request. A user's slot that runs it is in [`super::slot`].

use std::str::FromStr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use pyo3::prelude::*;
use pyo3::pybacked::PyBackedBytes;
use pyo3::types::PyBytes;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_LENGTH, TRANSFER_ENCODING};
use reqwest::{Method, Url};

use crate::engine::rotation::{random_seed, Rotation};
use crate::engine::runtime;
use crate::error::{Error, Result};
use crate::measure::measurements::{Latency, PyMeasurements, Recorder};
use crate::protocol::generative::{self, Api, Tokens};
use crate::protocol::grpc;
use crate::protocol::litserve;
use crate::protocol::reason;
use crate::protocol::tensor::DataType;
use crate::protocol::triton::{self, ExpectedOutput};
use crate::transport::{Body, ClientConfig, RequestSpec, Transport};

/// Default cap on a response body: large enough for any classifier output, small enough that a
/// misbehaving server cannot exhaust memory.
pub const DEFAULT_MAX_RESPONSE_BYTES: usize = 64 * 1024 * 1024;

/// How a response is judged.
#[derive(Debug, Clone)]
enum Check {
    /// Any 2xx.
    Status,
    /// A KServe v2 inference response carrying these outputs.
    Triton(Vec<ExpectedOutput>),
    /// A KServe v2 gRPC `ModelInferResponse` carrying these outputs.
    TritonGrpc(Vec<ExpectedOutput>),
    /// A LitServe JSON response whose value under `key` is checked, of this shape when given.
    LitServe {
        key: String,
        shape: Option<Vec<Option<usize>>>,
    },
    /// Generated text, streamed (Server-Sent Events) when `stream`: read as it arrives by a
    /// [`generative::Reader`], which counts the tokens.
    Generative {
        api: Api,
        stream: bool,
        /// `--tokenizer`: counts the generated text.
        counter: Option<Arc<generative::Counter>>,
        /// With `counter`: its count of each body's prompt, by body index.
        prompt_tokens: Vec<Option<u64>>,
    },
    /// Panics as it judges: how the tests make a request panic.
    #[cfg(test)]
    Panic,
}

/// The result of one request.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub status: Option<u16>,
    pub response_time: Duration,
    pub ttfb: Option<Duration>,
    pub length: usize,
    pub top1: Option<usize>,
    pub headers: Option<Vec<(String, String)>>,
    pub body: Option<Bytes>,
    pub error: Option<Error>,
    /// Sent on a second connection: the pooled one was closed before any byte went out.
    pub resent: bool,
    /// Which of the endpoint's bodies was sent.
    pub input_index: usize,
    /// A generative endpoint's answer: its tokens and when they arrived (what arrived before a
    /// failure too). Shared: an outcome is cloned on its way to Python.
    pub tokens: Option<Arc<Tokens>>,
}

/// The id of the next endpoint made: ids start at 1 (a slot's mailbox starts with key 0, no
/// endpoint's) and are never reused, unlike an address.
static NEXT_ID: AtomicUsize = AtomicUsize::new(1);

pub(crate) struct Endpoint {
    /// Unique in the process: the key a slot's follow-up is adopted by.
    pub(crate) id: usize,
    transport: Transport,
    spec: RequestSpec,
    check: Check,
    keep_headers: bool,
    keep_body: bool,
    /// Whether each user walks the bodies in its own shuffled order.
    shuffle: bool,
    pub(crate) latency: Recorder,
}

impl Endpoint {
    /// A walk through this endpoint's bodies for one user, shuffled with `seed` (or a random
    /// seed) when the endpoint shuffles.
    pub(crate) fn rotation(&self, seed: Option<u64>) -> Rotation {
        let seed = self.shuffle.then(|| seed.unwrap_or_else(random_seed));
        Rotation::new(self.spec.bodies.len(), seed)
    }

    /// Accounts for a reported request of a closed loop (see `PyEndpoint::record`).
    pub(crate) fn record(&self, o: &Outcome, success: bool) {
        let latency = o.latency(success, o.response_time);
        let tokens = o.tokens.as_deref().map(|t| (t, Duration::ZERO));
        self.latency.record(latency, o.resent, tokens);
    }

    /// Sends body `index` and judges the answer. A panic on the way is this request's failure, so
    /// whoever waits for it is answered.
    pub(crate) async fn run(&self, index: usize) -> Outcome {
        let start = std::time::Instant::now();
        let outcome = match runtime::catch_panic(self.exchange(index)).await {
            Ok(outcome) => outcome,
            Err(reason) => Outcome::failed(
                Error::Internal {
                    url: self.spec.url.to_string(),
                    reason,
                },
                start.elapsed(),
                None,
            ),
        };
        Outcome {
            input_index: index,
            ..outcome
        }
    }

    async fn exchange(&self, index: usize) -> Outcome {
        let mut reader = match &self.check {
            Check::Generative {
                api,
                stream,
                counter,
                prompt_tokens,
            } => Some(
                generative::Reader::new(
                    *api,
                    *stream,
                    self.spec.url.to_string(),
                    self.spec.max_response_bytes,
                    self.keep_body,
                )
                .with_counter(counter.clone())
                .with_prompt_tokens(prompt_tokens.get(index).copied().flatten()),
            ),
            _ => None,
        };
        let sink = reader
            .as_mut()
            .map(|r| r as &mut dyn crate::transport::BodySink);
        match self.transport.send_to(&self.spec, index, sink).await {
            Err(f) => Outcome {
                resent: f.resent,
                tokens: reader.map(|r| Arc::new(r.into_tokens())),
                ..Outcome::failed(f.error, f.elapsed, f.status)
            },
            Ok(resp) => {
                let headers = self.keep_headers.then(|| {
                    resp.headers
                        .iter()
                        .map(|(k, v)| {
                            (
                                k.to_string(),
                                String::from_utf8_lossy(v.as_bytes()).into_owned(),
                            )
                        })
                        .collect()
                });
                let mut tokens = None;
                let verdict = if (200..300).contains(&resp.status) {
                    match reader {
                        Some(reader) => {
                            let (read, verdict) = reader.finish(&resp.body);
                            tokens = Some(Arc::new(read));
                            verdict.map(|()| None)
                        }
                        None => self.judge(&resp.headers, &resp.body),
                    }
                } else {
                    Err(Error::Status {
                        status: resp.status,
                        url: self.spec.url.to_string(),
                        body: reason::grouped_body_reason(&resp.body),
                        excerpt: reason::body_excerpt(&resp.body),
                    })
                };
                let (top1, error) = match verdict {
                    Ok(top1) => (top1, None),
                    Err(e) => (None, Some(e)),
                };
                Outcome {
                    status: Some(resp.status),
                    response_time: resp.total,
                    ttfb: Some(resp.ttfb),
                    length: resp.length,
                    top1,
                    headers,
                    body: self.keep_body.then(|| resp.body.clone()),
                    error,
                    resent: resp.resent,
                    input_index: 0,
                    tokens,
                }
            }
        }
    }

    fn judge(&self, headers: &HeaderMap, body: &Bytes) -> Result<Option<usize>> {
        match &self.check {
            Check::Status => Ok(None),
            Check::Triton(expected) => {
                let header_length = headers
                    .get(triton::HEADER_LENGTH_HEADER)
                    .map(|v| triton::parse_header_length(v.as_bytes()))
                    .transpose()?;
                triton::check_response(body, header_length, expected)
            }
            Check::TritonGrpc(expected) => grpc::check_response(body, expected),
            Check::LitServe { key, shape } => litserve::check_response(body, key, shape.as_deref()),
            Check::Generative { .. } => Ok(None), // judged by its reader
            #[cfg(test)]
            Check::Panic => panic!("injected by a test"),
        }
    }
}

impl Outcome {
    /// Its latencies for the histograms when it succeeded (and `success` agrees), with `total`
    /// as the latency to report.
    pub(crate) fn latency(&self, success: bool, total: Duration) -> Option<Latency> {
        match (&self.error, self.ttfb) {
            (None, Some(ttfb)) if success => Some(Latency {
                total,
                ttfb,
                service: self.response_time,
            }),
            _ => None,
        }
    }

    fn failed(error: Error, elapsed: Duration, status: Option<u16>) -> Self {
        Outcome {
            status,
            response_time: elapsed,
            ttfb: None,
            length: 0,
            top1: None,
            headers: None,
            body: None,
            error: Some(error),
            resent: false,
            input_index: 0,
            tokens: None,
        }
    }
}

/// Parses an http(s) URL without credentials: one transport would send `user:password@` as Basic
/// auth and the other drop it, and every failure message carries the URL, so a password in it would
/// reach the failures CSV and the reports. Errors never show the part before `@`.
pub(crate) fn parse_url(url: &str) -> Result<Url> {
    let shown = without_userinfo(url);
    let parsed = Url::parse(url)
        .map_err(|e| Error::InvalidArgument(format!("invalid URL {shown:?}: {e}")))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(Error::InvalidArgument(format!(
            "URL {shown:?} is not http:// or https://"
        )));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(Error::InvalidArgument(format!(
            "URL {shown:?} carries a user or password: send credentials as a header (Authorization)"
        )));
    }
    Ok(parsed)
}

/// `url` with anything before an `@` in its authority replaced by `***`.
fn without_userinfo(url: &str) -> std::borrow::Cow<'_, str> {
    let start = url.find("://").map_or(0, |i| i + 3);
    let authority = url[start..]
        .find(['/', '?', '#', '\\'])
        .map_or(&url[start..], |end| &url[start..start + end]);
    match authority.rfind('@') {
        Some(at) => format!("{}***{}", &url[..start], &url[start + at..]).into(),
        None => url.into(),
    }
}

pub(crate) fn header_map(headers: &[(String, String)]) -> Result<HeaderMap> {
    let mut map = HeaderMap::new();
    for (name, value) in headers {
        let n = HeaderName::from_str(name)
            .map_err(|_| Error::InvalidArgument(format!("invalid header name {name:?}")))?;
        if n == CONTENT_LENGTH || n == TRANSFER_ENCODING {
            continue; // the body's framing is the transport's to state, from the body itself
        }
        let mut v = HeaderValue::from_str(value)
            .map_err(|_| Error::InvalidArgument(format!("invalid value for header {name:?}")))?;
        if n == reqwest::header::AUTHORIZATION {
            v.set_sensitive(true);
        }
        map.append(n, v);
    }
    Ok(map)
}

pub(crate) fn timeout(seconds: f64) -> Result<Duration> {
    Duration::try_from_secs_f64(seconds)
        .ok()
        .filter(|d| !d.is_zero())
        .ok_or_else(|| {
            Error::InvalidArgument(format!(
                "timeout must be a positive number of seconds, got {seconds}"
            ))
        })
}

/// Only a generative check reads a stream; a gRPC protocol and the RPC its URL's path names agree:
/// `grpc` reads `ModelInfer`'s one answer, `grpc-stream` and `grpc-generate` the responses of
/// `ModelStreamInfer`.
/// Returns the gRPC request compression `compression` names, which only the gRPC protocols take.
fn check_reading(
    protocol: &str,
    url: &str,
    stream: bool,
    generative: bool,
    compression: &str,
) -> Result<Option<crate::transport::grpc::Compression>> {
    if stream && !generative {
        return Err(Error::InvalidArgument(format!(
            "stream=True needs protocol 'openai', 'triton-generate', 'grpc-generate' or \
             'grpc-stream', not {protocol:?}"
        )));
    }
    let streamed = url.ends_with(crate::transport::grpc::STREAM_RPC);
    if protocol.starts_with("grpc") && streamed == (protocol == "grpc") {
        return Err(Error::InvalidArgument(format!(
            "protocol {protocol:?} does not read the answers of {url}: 'grpc' takes ModelInfer, \
             'grpc-stream' and 'grpc-generate' ModelStreamInfer"
        )));
    }
    let compression = crate::transport::grpc::Compression::parse(compression)?;
    if compression.is_some() && !protocol.starts_with("grpc") {
        return Err(Error::InvalidArgument(format!(
            "grpc_compression applies to the gRPC protocols, not {protocol:?}"
        )));
    }
    Ok(compression)
}

fn expected_shape(shape: &[i64]) -> Vec<Option<usize>> {
    shape.iter().map(|&d| usize::try_from(d).ok()).collect()
}

/// Header names and values as Python gives them.
type HeaderList = Vec<(String, String)>;

/// The bodies given to `Endpoint(...)`: one, or several each with its own extra headers. They are
/// kept as the Python objects they are, not copied: an image set's bodies can take most of the
/// memory a run is allowed (`--max-input-memory`).
#[derive(FromPyObject)]
enum Bodies {
    One(PyBackedBytes),
    Many(Vec<(PyBackedBytes, HeaderList)>),
}

impl Bodies {
    fn into_bodies(self) -> Result<Vec<Body>> {
        match self {
            Bodies::One(bytes) => Ok(vec![Body::new(Bytes::from_owner(bytes))]),
            Bodies::Many(many) if many.is_empty() => Err(Error::InvalidArgument(
                "an endpoint needs at least one body".into(),
            )),
            Bodies::Many(many) => many
                .into_iter()
                .map(|(bytes, headers)| {
                    Ok(Body {
                        bytes: Bytes::from_owner(bytes),
                        headers: header_map(&headers)?,
                    })
                })
                .collect(),
        }
    }
}

/// One prepared request: URL, headers and one or more bodies, each encoded once and shared by
/// every send.
#[pyclass(frozen, module = "locust_inference._native", name = "Endpoint")]
pub struct PyEndpoint {
    pub(crate) inner: Arc<Endpoint>,
}

#[pymethods]
impl PyEndpoint {
    #[new]
    #[allow(clippy::fn_params_excessive_bools, clippy::too_many_arguments)] // Python's keyword arguments
    #[pyo3(signature = (url, body, *, method = "POST", headers = Vec::new(), protocol = "none", outputs = None,
        output_shape = None, output_key = "output", timeout = 60.0, max_response_bytes = DEFAULT_MAX_RESPONSE_BYTES, insecure = false,
        ca_file = None, keep_headers = false, keep_body = false, shuffle = false, zero_copy = true, stream = false, grpc_connections = 4,
        tokenizer = None, grpc_compression = "none"))]
    fn new(
        url: &str,
        body: Bodies,
        method: &str,
        headers: Vec<(String, String)>,
        protocol: &str,
        outputs: Option<Vec<(String, String, Vec<i64>)>>,
        output_shape: Option<Vec<i64>>,
        output_key: &str,
        timeout: f64,
        max_response_bytes: usize,
        insecure: bool,
        ca_file: Option<std::path::PathBuf>,
        keep_headers: bool,
        keep_body: bool,
        shuffle: bool,
        zero_copy: bool,
        stream: bool,
        grpc_connections: usize,
        tokenizer: Option<std::path::PathBuf>,
        grpc_compression: &str,
    ) -> PyResult<Self> {
        let mut check = match protocol {
            "none" => Check::Status,
            "triton" | "grpc" => {
                let outputs = outputs.unwrap_or_default();
                let expected = outputs
                    .into_iter()
                    .map(|(name, datatype, shape)| {
                        let datatype = DataType::parse(&datatype).map_err(|_| {
                            Error::InvalidArgument(format!(
                                "output {name:?}: unsupported datatype {datatype:?}"
                            ))
                        })?;
                        Ok(ExpectedOutput {
                            name,
                            datatype,
                            shape: expected_shape(&shape),
                        })
                    })
                    .collect::<Result<Vec<_>>>()?;
                if protocol == "grpc" {
                    Check::TritonGrpc(expected)
                } else {
                    Check::Triton(expected)
                }
            }
            "litserve" => Check::LitServe {
                key: output_key.to_owned(),
                shape: output_shape.as_deref().map(expected_shape),
            },
            other => match Api::parse(other) {
                Some(api) => Check::Generative {
                    api,
                    stream: stream || api.grpc(), // a ModelStreamInfer answer is always a stream
                    counter: match &tokenizer {
                        Some(path) => Some(Arc::new(
                            generative::Counter::load(path)
                                .map_err(|e| crate::error::ConfigError::new_err(e.to_string()))?,
                        )),
                        None => None,
                    },
                    prompt_tokens: Vec::new(),
                },
                None => {
                    return Err(Error::InvalidArgument(format!(
                        "protocol must be 'triton', 'grpc', 'grpc-stream', 'grpc-generate', 'litserve', \
                         'openai', 'triton-generate' or 'none', not {other:?}"
                    ))
                    .into())
                }
            },
        };
        let generative = matches!(check, Check::Generative { .. });
        let compression = check_reading(protocol, url, stream, generative, grpc_compression)?;
        let grpc = protocol.starts_with("grpc");
        let method = Method::from_str(&method.to_ascii_uppercase())
            .map_err(|_| Error::InvalidArgument(format!("invalid HTTP method {method:?}")))?;
        let mut spec = RequestSpec {
            method,
            url: parse_url(url)?,
            headers: header_map(&headers)?,
            bodies: body.into_bodies()?,
            timeout: self::timeout(timeout)?,
            max_response_bytes,
        };
        if let Check::Generative {
            api,
            counter: Some(counter),
            prompt_tokens,
            ..
        } = &mut check
        {
            // once per body, at start: the prompts are ours, each request only looks its count up
            *prompt_tokens = spec
                .bodies
                .iter()
                .map(|b| generative::prompt_text(*api, &b.bytes).and_then(|t| counter.count(&t)))
                .collect();
        }
        let config = ClientConfig { insecure, ca_file };
        let transport = if grpc {
            Transport::grpc(&spec, &config, grpc_connections, compression)?
        } else {
            Transport::new(&mut spec, config, zero_copy)?
        };
        Ok(PyEndpoint {
            inner: Arc::new(Endpoint {
                id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
                transport,
                spec,
                check,
                keep_headers,
                keep_body,
                shuffle,
                latency: Recorder::default(),
            }),
        })
    }

    #[getter]
    fn url(&self) -> String {
        self.inner.spec.url.to_string()
    }

    /// The first body's length.
    #[getter]
    fn body_length(&self) -> usize {
        self.inner.spec.bodies[0].bytes.len()
    }

    /// Whether bodies are sent with `sendfile` from a sealed memfd rather than copied into the socket
    /// on every send (`http://` bodies of up to 1 MiB each and 256 MiB in all, unless
    /// `zero_copy=False`).
    #[getter]
    fn zero_copy(&self) -> bool {
        self.inner.transport.zero_copy()
    }

    /// How many bodies the requests rotate through.
    #[getter]
    fn body_count(&self) -> usize {
        self.inner.spec.bodies.len()
    }

    /// Accounts for a reported request: its latency when it succeeded (`success`, false when a
    /// check made in Python failed it), and whether it was resent. The user calls this as it
    /// reports the request to Locust, in the same greenlet step, so that both count exactly the
    /// same requests (an outcome that arrives as its user is stopped is in neither).
    #[pyo3(signature = (outcome, success = true))]
    fn record(&self, outcome: &PyOutcome, success: bool) {
        self.inner.record(&outcome.0, success);
    }

    /// What the requests recorded since the last call measured (latency histograms, resent
    /// count, open-loop counters); recording starts afresh.
    fn take(&self) -> PyMeasurements {
        PyMeasurements {
            inner: self.inner.latency.take(),
        }
    }

    /// Forgets what was recorded since the last take, as Locust's `--reset-stats` does once all
    /// users are spawned; running streams count their time from now, and their pending requests
    /// as carried (see `StreamCounts`).
    fn reset(&self) {
        self.inner.latency.reset();
    }

    fn __repr__(&self) -> String {
        format!(
            "Endpoint({} {}, {} bodies, the first {} bytes)",
            self.inner.spec.method,
            self.inner.spec.url,
            self.inner.spec.bodies.len(),
            self.inner.spec.bodies[0].bytes.len()
        )
    }
}

/// How one request went.
#[pyclass(frozen, module = "locust_inference._native", name = "Outcome")]
pub struct PyOutcome(pub(crate) Outcome);

#[pymethods]
impl PyOutcome {
    /// True when the response was a 2xx that passed validation.
    #[getter]
    fn ok(&self) -> bool {
        self.0.error.is_none()
    }

    #[getter]
    fn status(&self) -> Option<u16> {
        self.0.status
    }

    /// Milliseconds from just before the request was written to the last byte of the body (or to
    /// the failure).
    #[getter]
    fn response_time(&self) -> f64 {
        self.0.response_time.as_secs_f64() * 1000.0
    }

    /// Milliseconds to the response head (time to first byte), when one arrived.
    #[getter]
    fn ttfb(&self) -> Option<f64> {
        self.0.ttfb.map(|d| d.as_secs_f64() * 1000.0)
    }

    #[getter]
    fn response_length(&self) -> usize {
        self.0.length
    }

    /// Whether the request went out on a second connection because the pooled one was closed
    /// before any byte of it was written (the server cannot have seen the first try).
    #[getter]
    fn resent(&self) -> bool {
        self.0.resent
    }

    /// Index of the largest value of the first output's first row.
    #[getter]
    fn top1(&self) -> Option<usize> {
        self.0.top1
    }

    /// Which of the endpoint's bodies this request sent.
    #[getter]
    fn input_index(&self) -> usize {
        self.0.input_index
    }

    /// Milliseconds from the send to the first content chunk of a streamed answer (a generative
    /// endpoint's), when one arrived.
    #[getter]
    fn ttft(&self) -> Option<f64> {
        self.0.tokens.as_ref()?.ttft().map(ms)
    }

    /// Milliseconds per output token after the first: (last content chunk − first) / (output
    /// tokens − 1); None below 2 tokens or without a stream.
    #[getter]
    fn tpot(&self) -> Option<f64> {
        self.0.tokens.as_ref()?.tpot().map(ms)
    }

    /// Milliseconds between consecutive content chunks (inter-token latencies), in order.
    #[getter]
    fn itl(&self) -> Vec<f64> {
        self.0
            .tokens
            .as_ref()
            .map(|t| t.gaps().map(ms).collect())
            .unwrap_or_default()
    }

    /// Output tokens: the server's `usage.completion_tokens`, else the content chunks of a
    /// stream (see `token_source`); None when unknown (not generative, or a whole body without
    /// usage).
    #[getter]
    fn output_tokens(&self) -> Option<u64> {
        self.0.tokens.as_ref()?.output_tokens()
    }

    /// Input tokens, from the server's `usage.prompt_tokens`, else the tokenizer's count of the
    /// prompt.
    #[getter]
    fn input_tokens(&self) -> Option<u64> {
        self.0.tokens.as_ref()?.input_tokens()
    }

    /// Where `output_tokens` comes from: "usage" (the server's count), "tokenizer" (the
    /// `--tokenizer`'s count of the text) or "chunks" (content chunks counted, approximate); None
    /// when it is None.
    #[getter]
    fn token_source(&self) -> Option<&'static str> {
        self.0
            .tokens
            .as_ref()?
            .source()
            .map(generative::Source::name)
    }

    /// Content chunks received (events with text; 1 for a whole body with text).
    #[getter]
    fn chunks(&self) -> u64 {
        self.0.tokens.as_ref().map_or(0, |t| t.chunks)
    }

    /// Response headers, when the endpoint keeps them (`keep_headers=True`).
    #[getter]
    fn headers(&self) -> Option<Vec<(String, String)>> {
        self.0.headers.clone()
    }

    /// The response body, when the endpoint keeps it (`keep_body=True`).
    #[getter]
    fn body<'py>(&self, py: Python<'py>) -> Option<Bound<'py, PyBytes>> {
        self.0.body.as_ref().map(|b| PyBytes::new(py, b))
    }

    /// A short label of the failure (`status`, `connect`, `timeout`, `protocol`, ...).
    #[getter]
    fn error_kind(&self) -> Option<&'static str> {
        self.0.error.as_ref().map(Error::kind)
    }

    /// The failure as it happened, for the DEBUG_REQUESTS log: an HTTP error status with the raw
    /// start of its body, where `exception` has it normalised so that failures group.
    #[getter]
    fn error_detail(&self) -> Option<String> {
        self.0.error.as_ref().map(|e| match e {
            Error::Status {
                status,
                url,
                excerpt,
                ..
            } => format!("HTTP {status} from {url}: {excerpt}"),
            other => other.to_string(),
        })
    }

    /// The failure as a `LocustInferenceError` instance, or `None`.
    #[getter]
    fn exception(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.0
            .error
            .clone()
            .map(|e| PyErr::from(e).into_value(py).into_any())
    }

    fn __repr__(&self) -> String {
        match &self.0.error {
            None => format!(
                "Outcome(ok, status={:?}, {:.3} ms)",
                self.0.status,
                self.response_time()
            ),
            Some(e) => format!("Outcome(failed, {e})"),
        }
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// One blocking request, for set-up work (model metadata, statistics) before users start.
/// Returns `(status, body)`; connection failures, timeouts, redirects (3xx, never followed) and a body over
/// `max_response_bytes` raise. A caller that reads often (the metrics scrape) sets a small limit, so a
/// hostile endpoint cannot have it buffer the 64 MiB default each time.
#[pyfunction]
#[allow(clippy::too_many_arguments)] // the keyword arguments of the Python signature
#[pyo3(signature = (method, url, *, body = Vec::new(), headers = Vec::new(), timeout = 10.0, insecure = false, ca_file = None, max_response_bytes = DEFAULT_MAX_RESPONSE_BYTES))]
pub fn http_request<'py>(
    py: Python<'py>,
    method: &str,
    url: &str,
    body: Vec<u8>,
    headers: Vec<(String, String)>,
    timeout: f64,
    insecure: bool,
    ca_file: Option<std::path::PathBuf>,
    max_response_bytes: usize,
) -> PyResult<(u16, Bound<'py, PyBytes>)> {
    let mut spec = RequestSpec {
        method: Method::from_str(&method.to_ascii_uppercase())
            .map_err(|_| Error::InvalidArgument(format!("invalid HTTP method {method:?}")))?,
        url: parse_url(url)?,
        headers: header_map(&headers)?,
        bodies: vec![Body::new(Bytes::from(body))],
        timeout: self::timeout(timeout)?,
        max_response_bytes,
    };
    let transport = Transport::new(&mut spec, ClientConfig { insecure, ca_file }, false)?;
    let rt = runtime::runtime()?;
    let url = spec.url.to_string();
    // On the runtime's own thread, as every request: its signals are blocked there, and a panic
    // comes back as an error rather than unwinding into Python.
    let task = rt.spawn(async move { transport.send(&spec, 0).await.map_err(|f| f.error) });
    let result = py
        .detach(|| rt.block_on(task))
        .map_err(|e| Error::Internal {
            url,
            reason: if e.is_panic() {
                runtime::panic_message(e.into_panic().as_ref())
            } else {
                "the request was cancelled".into()
            },
        })??;
    Ok((result.status, PyBytes::new(py, &result.body)))
}

#[cfg(test)]
pub(crate) mod tests {
    use std::io::{BufRead, BufReader, Read, Write};
    use std::net::TcpListener;

    use super::*;
    use crate::engine::schedule::{Arrival, Overload};
    use crate::engine::slot::run_requests;
    use crate::engine::stream::{Stream, StreamConfig};
    use crate::engine::wake::Mailbox;
    use crate::transport::script::{chunked_head, serve, Step};
    use proptest::prelude::*;
    use std::sync::Mutex;

    /// Answers every request on every connection with a 200, until the test process ends.
    pub(crate) fn serve_ok() -> u16 {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { return };
                std::thread::spawn(move || {
                    let mut reader = BufReader::new(stream.try_clone().unwrap());
                    loop {
                        let mut length = 0;
                        loop {
                            let mut line = String::new();
                            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                                return;
                            }
                            if line == "\r\n" {
                                break;
                            }
                            let lower = line.to_ascii_lowercase();
                            if let Some(v) = lower.strip_prefix("content-length:") {
                                length = v.trim().parse().unwrap();
                            }
                        }
                        let mut body = vec![0; length];
                        reader.read_exact(&mut body).unwrap();
                        let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                        if stream.write_all(answer).is_err() {
                            return;
                        }
                    }
                });
            }
        });
        port
    }

    /// An endpoint of the server on `port` whose answers are judged by `check`.
    fn endpoint(port: u16, check: Check) -> Arc<Endpoint> {
        endpoint_of(port, check, 1, false)
    }

    /// An endpoint of the server on `port` that accepts any 2xx, with `bodies` bodies sent in
    /// turn (shuffled per user when `shuffle`).
    pub(crate) fn endpoint_with(port: u16, bodies: usize, shuffle: bool) -> Arc<Endpoint> {
        endpoint_of(port, Check::Status, bodies, shuffle)
    }

    fn endpoint_of(port: u16, check: Check, bodies: usize, shuffle: bool) -> Arc<Endpoint> {
        let mut spec = RequestSpec {
            method: Method::POST,
            url: format!("http://127.0.0.1:{port}/infer").parse().unwrap(),
            headers: HeaderMap::new(),
            bodies: (0..bodies)
                .map(|i| Body::new(Bytes::from(format!("tensor {i}"))))
                .collect(),
            timeout: Duration::from_secs(30),
            max_response_bytes: 1024,
        };
        let transport = Transport::new(&mut spec, ClientConfig::default(), false).unwrap();
        Arc::new(Endpoint {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            transport,
            spec,
            check,
            keep_headers: false,
            keep_body: false,
            shuffle,
            latency: Recorder::default(),
        })
    }

    /// A streaming endpoint (`protocol="openai"`, `stream=True`) of the server on `port`.
    fn generative(port: u16, timeout: Duration) -> Arc<Endpoint> {
        generative_within(port, timeout, DEFAULT_MAX_RESPONSE_BYTES)
    }

    fn generative_within(port: u16, timeout: Duration, max_response_bytes: usize) -> Arc<Endpoint> {
        let mut spec = RequestSpec {
            method: Method::POST,
            url: format!("http://127.0.0.1:{port}/v1/chat/completions")
                .parse()
                .unwrap(),
            headers: HeaderMap::new(),
            bodies: vec![Body::new(Bytes::from_static(b"{\"stream\":true}"))],
            timeout,
            max_response_bytes,
        };
        let transport = Transport::new(&mut spec, ClientConfig::default(), false).unwrap();
        Arc::new(Endpoint {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            transport,
            spec,
            check: Check::Generative {
                api: Api::OpenAi,
                stream: true,
                counter: None,
                prompt_tokens: Vec::new(),
            },
            keep_headers: false,
            keep_body: false,
            shuffle: false,
            latency: Recorder::default(),
        })
    }

    fn run_once(endpoint: &Endpoint) -> Outcome {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(endpoint.run(0))
    }

    /// An OpenAI chat chunk carrying `text`.
    fn chunk(text: &str) -> Step {
        Step::Chunk(
            format!(
                "data: {{\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"{text}\"}}}}]}}\n\n"
            )
            .into_bytes(),
        )
    }

    const USAGE_AND_DONE: &[u8] = b"data: {\"choices\":[],\"usage\":{\"prompt_tokens\":7,\"completion_tokens\":5}}\n\ndata: [DONE]\n\n";

    /// Each content chunk is timed as it arrives (after the server's pauses), and recording the
    /// outcome fills the token histograms and counters.
    #[test]
    fn a_stream_s_tokens_are_timed_on_arrival_and_recorded() {
        let pause = Duration::from_millis(30);
        let port = serve(vec![
            chunked_head("text/event-stream"),
            Step::Pause(pause),
            chunk("Hel"),
            Step::Pause(pause),
            chunk("lo"),
            Step::Pause(pause),
            chunk("!"),
            Step::Chunk(USAGE_AND_DONE.to_vec()),
            Step::End,
        ]);
        let endpoint = generative(port, Duration::from_secs(30));
        let outcome = run_once(&endpoint);
        assert!(outcome.error.is_none(), "{:?}", outcome.error);
        let sent: usize = ["Hel", "lo", "!"]
            .map(|t| match chunk(t) {
                Step::Chunk(bytes) => bytes.len(),
                _ => unreachable!(),
            })
            .iter()
            .sum();
        assert_eq!(
            outcome.length,
            sent + USAGE_AND_DONE.len(),
            "counted, not kept"
        );
        let tokens = outcome.tokens.clone().unwrap();
        assert_eq!(tokens.times.len(), 3);
        for (i, t) in tokens.times.iter().enumerate() {
            assert!(*t >= pause * (i as u32 + 1), "{:?}", tokens.times);
        }
        assert!(outcome.response_time >= tokens.times[2]);
        assert_eq!(
            (tokens.output_tokens(), tokens.usage_input, tokens.chunks),
            (Some(5), Some(7), 3)
        );
        assert_eq!(
            tokens.tpot(),
            Some(tokens.times[2].saturating_sub(tokens.times[0]) / 4),
            "5 tokens by usage: 4 steps"
        );
        endpoint.record(&outcome, true);
        let m = endpoint.latency.take();
        let us = |d: Duration| {
            m.ttft
                .highest_equivalent(crate::measure::histogram::micros(d))
        };
        assert_eq!((m.ttft.len(), m.ttft.max()), (1, us(tokens.times[0])));
        assert_eq!((m.itl.len(), m.tpot.len()), (2, 1));
        assert_eq!(
            (
                m.output_tokens.max(),
                m.input_tokens.max(),
                m.output_tokens.len()
            ),
            (5, 7, 1)
        );
        let t = m.tokens;
        assert_eq!(
            (
                t.output,
                t.failed_output,
                t.requests,
                t.approximate,
                t.no_tokens
            ),
            (5, 0, 1, 0, 0)
        );
    }

    /// A stream without content succeeds, with no time to first token, and is counted.
    #[test]
    fn a_stream_without_content_is_counted_without_ttft() {
        let port = serve(vec![
            chunked_head("text/event-stream"),
            chunk(""),
            Step::Chunk(b"data: [DONE]\n\n".to_vec()),
            Step::End,
        ]);
        let endpoint = generative(port, Duration::from_secs(30));
        let outcome = run_once(&endpoint);
        assert!(outcome.error.is_none(), "{:?}", outcome.error);
        endpoint.record(&outcome, true);
        let m = endpoint.latency.take();
        assert_eq!((m.total.len(), m.ttft.len(), m.itl.len()), (1, 0, 0));
        let t = m.tokens;
        assert_eq!((t.requests, t.approximate, t.no_tokens), (1, 1, 1));
    }

    /// Each fault of a stream is a failure with its reason, and the tokens received before it
    /// are counted as the failed requests' (never as a success's).
    #[test]
    fn a_stream_s_faults_fail_with_the_tokens_received() {
        let json = b"{\"choices\":[{\"message\":{\"content\":\"hi\"}}]}";
        let mut as_json = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
            json.len()
        )
        .into_bytes();
        as_json.extend_from_slice(json);
        let mut endless = vec![chunked_head("text/event-stream"), chunk("a")];
        endless.extend((0..160).map(|_| Step::Chunk(vec![b'x'; 64 << 10])));
        endless.push(Step::End);
        let two = || vec![chunked_head("text/event-stream"), chunk("a"), chunk("b")];
        let cases: Vec<(&str, Vec<Step>, &str, &str, u64)> = vec![
            ("cut mid-stream", two(), "transport", "unexpected EOF", 2),
            (
                "no [DONE]",
                [two(), vec![Step::End]].concat(),
                "stream",
                "the stream ended before data: [DONE]",
                2,
            ),
            (
                "[DONE] never sent, the connection kept open",
                [two(), vec![Step::Hold]].concat(),
                "timeout",
                "within 0.3 s",
                2,
            ),
            (
                "an error event",
                vec![
                    chunked_head("text/event-stream"),
                    chunk("a"),
                    Step::Chunk(b"data: {\"error\":{\"message\":\"overloaded\"}}\n\n".to_vec()),
                    Step::End,
                ],
                "stream",
                "the server sent an error: overloaded",
                1,
            ),
            (
                "data that is not JSON",
                vec![
                    chunked_head("text/event-stream"),
                    chunk("a"),
                    Step::Chunk(b"data: {\"choices\": [oops\n\n".to_vec()),
                    Step::End,
                ],
                "protocol",
                "not JSON",
                1,
            ),
            (
                "a 10 MiB line without a line end",
                endless,
                "protocol",
                "a server-sent event larger than 1048576 bytes",
                1,
            ),
            (
                "one JSON body instead of a stream",
                vec![Step::Raw(as_json)],
                "stream",
                "asked for a stream, the server sent one JSON body",
                1,
            ),
        ];
        for (what, steps, kind, reason, received) in cases {
            let endpoint = generative(serve(steps), Duration::from_millis(300));
            let outcome = run_once(&endpoint);
            let error = outcome
                .error
                .clone()
                .unwrap_or_else(|| panic!("{what}: no failure"));
            assert_eq!(error.kind(), kind, "{what}: {error}");
            assert!(error.to_string().contains(reason), "{what}: {error}");
            assert_eq!(
                outcome.tokens.as_ref().unwrap().received(),
                received,
                "{what}"
            );
            endpoint.record(&outcome, true);
            let m = endpoint.latency.take();
            assert_eq!(
                (m.total.len(), m.ttft.len(), m.itl.len()),
                (0, 0, 0),
                "{what}"
            );
            assert_eq!(m.tokens.failed_output, received, "{what}");
            assert_eq!((m.tokens.output, m.tokens.requests), (0, 0), "{what}");
        }
    }

    /// A stream past the response limit fails as too large, with the chunks that fit counted
    /// (one event per HTTP chunk: hyper never hands over a frame spanning two chunks, so the
    /// frame refused is the fourth event's).
    #[test]
    fn a_stream_over_the_response_limit_fails_with_the_tokens_that_fit() {
        let Step::Chunk(one) = chunk("a") else {
            unreachable!()
        };
        let mut steps = vec![chunked_head("text/event-stream")];
        steps.extend((0..10).map(|_| chunk("a")));
        steps.push(Step::End);
        let endpoint = generative_within(serve(steps), Duration::from_secs(30), 3 * one.len() + 5);
        let outcome = run_once(&endpoint);
        let error = outcome.error.clone().expect("a failure");
        assert_eq!(error.kind(), "too-large", "{error}");
        assert_eq!(outcome.tokens.unwrap().received(), 3);
    }

    fn injected(port: u16) -> Error {
        Error::Internal {
            url: format!("http://127.0.0.1:{port}/infer"),
            reason: "injected by a test".into(),
        }
    }

    /// A request whose task panics is answered with a failure that says so: without that, the
    /// greenlet waiting on the slot's eventfd would wait forever. (The poll's limit only guards
    /// against that hang.)
    #[test]
    fn a_panic_in_a_slot_s_request_is_its_failure_and_wakes_the_waiter() {
        let port = serve_ok();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let mailbox = Arc::new(Mailbox::new().unwrap());
        let rotation = Arc::new(Mutex::new(None));
        for panics in [true, false] {
            let endpoint = endpoint(port, if panics { Check::Panic } else { Check::Status });
            let (m, r) = (Arc::clone(&mailbox), Arc::clone(&rotation));
            mailbox.start(1, false, |generation| {
                rt.spawn(run_requests(endpoint, m, r, None, generation, 0))
                    .abort_handle()
            });
            assert!(mailbox.fd().poll(30_000), "the waiter is never woken");
            let outcome = mailbox.take().unwrap();
            if panics {
                assert_eq!(outcome.error, Some(injected(port)));
                assert_eq!(outcome.error.unwrap().kind(), "internal");
            } else {
                assert!(outcome.error.is_none(), "the slot works on after a panic");
            }
        }
    }

    /// The same in an open-loop stream: each panicking request is a failed completion, and the
    /// stream's slot is free again for the next.
    #[test]
    fn a_panic_in_a_stream_s_request_is_a_failed_completion() {
        let port = serve_ok();
        let config = StreamConfig {
            rate: 50.0,
            arrival: Arrival::Constant,
            max_in_flight: 1,
            overload: Overload::Queue,
            shuffle_seed: None,
        };
        let stream = Stream::start(endpoint(port, Check::Panic), config).unwrap();
        let mut completions = Vec::new();
        while completions.len() < 3 {
            assert!(
                stream.fd().poll(30_000),
                "no completion: a panic lost the request"
            );
            completions.extend(stream.take());
        }
        stream.stop();
        for completion in completions {
            assert_eq!(completion.outcome.error, Some(injected(port)));
        }
    }

    #[test]
    fn urls_without_credentials_parse() {
        for url in [
            "http://127.0.0.1:8000",
            "https://h/v2/models/m@1",
            "http://h?x=a@b",
        ] {
            assert!(parse_url(url).is_ok(), "{url}");
        }
    }

    proptest! {
        #[test]
        fn credentials_are_refused_and_never_shown(
            user in "[a-z]{0,6}",
            secret in "[A-Za-z0-9]{8,16}",
            rest in prop::sample::select(vec!["127.0.0.1:8000", "h:99999", "h/p", "[::1"]),
        ) {
            for url in [format!("http://{user}:{secret}@{rest}"), format!("https://{secret}@{rest}")] {
                let err = parse_url(&url).expect_err("refused").to_string();
                prop_assert!(!err.contains(&secret), "{}", err);
            }
        }
    }
}
