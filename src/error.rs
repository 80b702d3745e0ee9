//! The crate's one error type, and its single conversion into Python exceptions.

use pyo3::exceptions::{PyException, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::{create_exception, PyErr};

create_exception!(
    locust_inference._native,
    LocustInferenceError,
    PyException,
    "Base class of every error raised by locust_inference."
);
create_exception!(
    locust_inference._native,
    ConfigError,
    LocustInferenceError,
    "The load test is misconfigured (unknown server, missing model, unreachable metadata...)."
);
create_exception!(
    locust_inference._native,
    ImageError,
    LocustInferenceError,
    "An image file is missing, empty, truncated or not an image."
);
create_exception!(
    locust_inference._native,
    RequestError,
    LocustInferenceError,
    "A request failed: connection refused, HTTP error status, certificate not accepted, response too large."
);
create_exception!(
    locust_inference._native,
    RequestTimeoutError,
    RequestError,
    "A request did not complete within its timeout."
);
create_exception!(
    locust_inference._native,
    CertificateError,
    RequestError,
    "The server's TLS certificate was not accepted (unknown issuer, wrong host, expired...)."
);
create_exception!(
    locust_inference._native,
    RedirectError,
    RequestError,
    "The server answered with a redirect (3xx), which is never followed."
);
create_exception!(
    locust_inference._native,
    ProtocolError,
    LocustInferenceError,
    "A message does not follow the server's protocol (bad header, sizes that don't add up...)."
);

/// Everything that can go wrong inside the native core.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Error {
    #[error("cannot read image {path}: {reason}")]
    Image { path: String, reason: String },
    #[error("{0}")]
    Protocol(String),
    #[error("cannot connect to {url}: {reason}")]
    Connect { url: String, reason: String },
    /// `body` is the body's normalised reason, what Locust groups failures by
    /// (`reason::body_reason`); `excerpt` its raw start, for the DEBUG_REQUESTS log only.
    #[error("HTTP {status} from {url}: {body}")]
    Status {
        status: u16,
        url: String,
        body: String,
        excerpt: String,
    },
    /// `deadline`: a gRPC call, whose deadline (the same timeout, sent as `grpc-timeout`) passed on
    /// the client's clock or the server's: one failure either way, named as gRPC names it.
    #[error("no complete response from {url} within {seconds} s{}", if *deadline { " (gRPC DEADLINE_EXCEEDED)" } else { "" })]
    Timeout {
        url: String,
        seconds: f64,
        deadline: bool,
    },
    #[error("request to {url} failed: {reason}")]
    Transport { url: String, reason: String },
    #[error("response from {url} is larger than the limit of {limit} bytes")]
    TooLarge { url: String, limit: usize },
    #[error("TLS certificate of {url} not accepted: {problem}; pass --ca-file with the certificate (or the CA that signed it) to trust it, or --insecure to skip the check")]
    Certificate { url: String, problem: String },
    #[error("{0}")]
    Runtime(String),
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    UnsupportedType(String),
    /// A 3xx answer: a failure, never followed, so no request (with the user's headers and body)
    /// goes to a host the user did not name.
    #[error("HTTP {status} from {url}: redirect to {location} not followed (requests go only to the URL given)")]
    Redirect {
        status: u16,
        url: String,
        location: String,
    },
    /// A streamed answer that failed part way: an error event from the server, a stream that ended
    /// before its end marker, or one JSON body where a stream was asked for.
    #[error("stream from {url} failed: {reason}")]
    Stream { url: String, reason: String },
    /// A gRPC status other than OK: `message` is the server's, normalised as an error body is (what
    /// Locust groups failures by); `excerpt` its raw start, for the DEBUG_REQUESTS log only.
    #[error("gRPC {} ({code}) from {url}: {message}", crate::protocol::grpc::code_name(*code))]
    Grpc {
        code: i32,
        url: String,
        message: String,
        excerpt: String,
    },
    /// A panic while the request was being sent or judged, caught so that its waiter is answered.
    #[error("internal error (panic) in the request to {url}: {reason}")]
    Internal { url: String, reason: String },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn protocol(msg: impl Into<String>) -> Self {
        Error::Protocol(msg.into())
    }

    /// A short machine-readable label, used for Locust's failure grouping and tests.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::Image { .. } => "image",
            Error::Protocol(_) => "protocol",
            Error::Connect { .. } => "connect",
            Error::Status { .. } => "status",
            Error::Timeout { .. } => "timeout",
            Error::Transport { .. } => "transport",
            Error::TooLarge { .. } => "too-large",
            Error::Certificate { .. } => "certificate",
            Error::Runtime(_) => "runtime",
            Error::InvalidArgument(_) => "invalid-argument",
            Error::UnsupportedType(_) => "unsupported-type",
            Error::Redirect { .. } => "redirect",
            Error::Internal { .. } => "internal",
            Error::Stream { .. } => "stream",
            Error::Grpc { .. } => "grpc-status",
        }
    }
}

impl From<Error> for PyErr {
    fn from(err: Error) -> PyErr {
        let msg = err.to_string();
        match err {
            Error::Image { .. } => ImageError::new_err(msg),
            Error::Protocol(_) => ProtocolError::new_err(msg),
            Error::Timeout { .. } => RequestTimeoutError::new_err(msg),
            Error::Connect { .. }
            | Error::Status { .. }
            | Error::Transport { .. }
            | Error::TooLarge { .. }
            | Error::Internal { .. }
            | Error::Stream { .. }
            | Error::Grpc { .. } => RequestError::new_err(msg),
            Error::Redirect { .. } => RedirectError::new_err(msg),
            Error::Certificate { .. } => CertificateError::new_err(msg),
            Error::Runtime(_) => LocustInferenceError::new_err(msg),
            Error::InvalidArgument(_) => PyValueError::new_err(msg),
            Error::UnsupportedType(_) => PyTypeError::new_err(msg),
        }
    }
}

/// Registers the exception hierarchy on the module.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add(
        "LocustInferenceError",
        py.get_type::<LocustInferenceError>(),
    )?;
    m.add("ConfigError", py.get_type::<ConfigError>())?;
    m.add("ImageError", py.get_type::<ImageError>())?;
    m.add("RequestError", py.get_type::<RequestError>())?;
    m.add("RequestTimeoutError", py.get_type::<RequestTimeoutError>())?;
    m.add("CertificateError", py.get_type::<CertificateError>())?;
    m.add("ProtocolError", py.get_type::<ProtocolError>())?;
    m.add("RedirectError", py.get_type::<RedirectError>())?;
    Ok(())
}
