//! The process's tokio runtime, the transports (the lean HTTP/1.1 client of [`crate::h1`] for
//! `http://`, pooled reqwest clients for `https://`), and one timed request.
//!
//! Locust's `--processes` forks: a runtime's threads do not survive a fork, so the runtime and every
//! client are rebuilt in the child of a fork (the parent's are leaked in the child, never dropped,
//! because dropping them would wait for threads that do not exist there).

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Once, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use reqwest::header::HeaderMap;
use reqwest::{Method, Url};
use tokio::runtime::Runtime;

use crate::error::{Error, Result};
use crate::h1;

static RUNTIME: Mutex<Option<(u64, Arc<Runtime>)>> = Mutex::new(None);

/// Bumped in the child of every fork (`pthread_atfork`), so that per-process state can tell it was
/// inherited without a `getpid` system call per request.
static FORK_GENERATION: AtomicU64 = AtomicU64::new(0);

extern "C" fn after_fork_in_child() {
    FORK_GENERATION.fetch_add(1, Ordering::Relaxed);
}

/// Which process this is, as far as inherited state goes: changes in the child of a fork.
pub(crate) fn process_generation() -> u64 {
    static REGISTER: Once = Once::new();
    REGISTER.call_once(|| {
        // SAFETY: registers a handler that only does an atomic add, which is async-signal-safe.
        unsafe { libc::pthread_atfork(None, None, Some(after_fork_in_child)) };
    });
    FORK_GENERATION.load(Ordering::Relaxed)
}

/// Worker threads of the runtime: `LOCUST_INFERENCE_IO_THREADS`, default 1 (one thread moves
/// tens of thousands of requests per second and leaves the other core to the server under test).
fn io_threads() -> usize {
    std::env::var("LOCUST_INFERENCE_IO_THREADS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|&n| n > 0)
        .unwrap_or(1)
}

/// This process's runtime, created on first use and re-created after a fork.
pub fn runtime() -> Result<Arc<Runtime>> {
    let generation = process_generation();
    let mut slot = RUNTIME.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some((owner, rt)) = slot.as_ref() {
        if *owner == generation {
            return Ok(Arc::clone(rt));
        }
    }
    if let Some(stale) = slot.take() {
        std::mem::forget(stale); // the parent's runtime: its threads are not ours to join
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(io_threads())
        .thread_name("locust-inference-io")
        .enable_io()
        .enable_time()
        .build()
        .map_err(|e| Error::Transport {
            url: String::new(),
            reason: format!("cannot start the I/O runtime: {e}"),
        })?;
    let rt = Arc::new(rt);
    *slot = Some((generation, Arc::clone(&rt)));
    Ok(rt)
}

/// TLS and pooling settings of a client.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ClientConfig {
    /// Skip certificate verification (`--insecure`).
    pub insecure: bool,
    /// Extra PEM CA bundle to trust.
    pub ca_file: Option<PathBuf>,
}

/// A keep-alive pooled client shared by all users of a process, rebuilt after a fork.
pub struct PooledClient {
    config: ClientConfig,
    current: Mutex<Option<(u64, reqwest::Client)>>,
}

impl PooledClient {
    pub fn new(config: ClientConfig) -> Result<Self> {
        let client = build_client(&config)?; // fail early on a bad CA file
        Ok(PooledClient {
            config,
            current: Mutex::new(Some((process_generation(), client))),
        })
    }

    pub fn get(&self) -> Result<reqwest::Client> {
        let generation = process_generation();
        let mut slot = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((owner, client)) = slot.as_ref() {
            if *owner == generation {
                return Ok(client.clone());
            }
        }
        if let Some(stale) = slot.take() {
            std::mem::forget(stale); // its pooled connections belong to the parent's runtime
        }
        let client = build_client(&self.config)?;
        *slot = Some((generation, client.clone()));
        Ok(client)
    }
}

impl Drop for PooledClient {
    fn drop(&mut self) {
        let slot = self
            .current
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner);
        if slot
            .as_ref()
            .is_some_and(|(owner, _)| *owner != process_generation())
        {
            // In the child of a fork: the parent's pooled connections share their sockets and epoll
            // instance with the parent; closing them here would unregister the parent's.
            std::mem::forget(slot.take());
        }
    }
}

fn build_client(config: &ClientConfig) -> Result<reqwest::Client> {
    let mut builder = reqwest::Client::builder()
        .http1_only()
        .tcp_nodelay(true)
        .no_proxy()
        .pool_idle_timeout(Duration::from_secs(90))
        .danger_accept_invalid_certs(config.insecure);
    if let Some(path) = &config.ca_file {
        let fail = |reason: String| {
            Error::InvalidArgument(format!("CA file {}: {reason}", path.display()))
        };
        let pem = std::fs::read(path).map_err(|e| fail(e.to_string()))?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| fail(e.to_string()))?;
        if certs.is_empty() {
            return Err(fail("no PEM certificate in the file".into()));
        }
        for cert in certs {
            builder = builder.add_root_certificate(cert);
        }
    }
    builder.build().map_err(|e| Error::Transport {
        url: String::new(),
        reason: format!("cannot build the HTTP client: {e}"),
    })
}

/// Everything needed to send one request, prepared once and shared by every send.
#[derive(Debug, Clone)]
pub struct RequestSpec {
    pub method: Method,
    pub url: Url,
    pub headers: HeaderMap,
    /// Encoded once; every send clones the handle, never the bytes.
    pub body: Bytes,
    pub timeout: Duration,
    pub max_response_bytes: usize,
}

/// A complete response and its timing.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// From just before the request is handed to the connection to the response head.
    pub ttfb: Duration,
    /// From the same instant to the last byte of the body.
    pub total: Duration,
}

/// A failed send and how long it took to fail.
#[derive(Debug)]
pub struct Failure {
    pub error: Error,
    pub elapsed: Duration,
    pub status: Option<u16>,
}

/// How an endpoint's requests are sent.
pub enum Transport {
    /// `http://`: the lean HTTP/1.1 client of [`crate::h1`].
    Plain(h1::Client),
    /// `https://`: reqwest with rustls.
    Tls(PooledClient),
}

impl Transport {
    /// The transport for `spec`'s URL; `config` applies to `https://` only.
    pub fn new(spec: &RequestSpec, config: ClientConfig) -> Result<Self> {
        if spec.url.scheme() == "https" {
            Ok(Transport::Tls(PooledClient::new(config)?))
        } else {
            Ok(Transport::Plain(h1::Client::new(spec)?))
        }
    }

    /// Sends the request and reads the whole body, within `spec.timeout` and
    /// `spec.max_response_bytes`.
    pub async fn send(&self, spec: &RequestSpec) -> Result<Response, Failure> {
        let start = Instant::now();
        let mut status = None;
        let exchange = async {
            match self {
                Transport::Plain(client) => client.exchange(spec, start, &mut status).await,
                Transport::Tls(pool) => {
                    let client = pool.get()?;
                    reqwest_exchange(&client, spec, start, &mut status).await
                }
            }
        };
        match tokio::time::timeout(spec.timeout, exchange).await {
            Ok(Ok(response)) => Ok(response),
            Ok(Err(error)) => Err(Failure {
                error,
                elapsed: start.elapsed(),
                status,
            }),
            Err(_) => Err(Failure {
                error: Error::Timeout {
                    url: spec.url.to_string(),
                    seconds: spec.timeout.as_secs_f64(),
                },
                elapsed: start.elapsed(),
                status,
            }),
        }
    }
}

async fn reqwest_exchange(
    client: &reqwest::Client,
    spec: &RequestSpec,
    start: Instant,
    status: &mut Option<u16>,
) -> Result<Response> {
    let request = client
        .request(spec.method.clone(), spec.url.clone())
        .headers(spec.headers.clone())
        .body(spec.body.clone())
        .build()
        .map_err(|e| transport_error(&spec.url, &e))?;
    let mut response = client
        .execute(request)
        .await
        .map_err(|e| transport_error(&spec.url, &e))?;
    let ttfb = start.elapsed();
    let code = response.status().as_u16();
    *status = Some(code);
    let too_large = || Error::TooLarge {
        url: spec.url.to_string(),
        limit: spec.max_response_bytes,
    };
    if response
        .content_length()
        .is_some_and(|n| n > spec.max_response_bytes as u64)
    {
        return Err(too_large());
    }
    let mut body = bytes::BytesMut::with_capacity(response.content_length().unwrap_or(0) as usize);
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| transport_error(&spec.url, &e))?
    {
        if body.len() + chunk.len() > spec.max_response_bytes {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    let total = start.elapsed();
    let headers = std::mem::take(response.headers_mut());
    Ok(Response {
        status: code,
        headers,
        body: body.freeze(),
        ttfb,
        total,
    })
}

/// Describes a reqwest error by its cause chain ("connection refused" lives deep inside); reqwest's
/// own top-level text only repeats the URL, which the message names already.
fn transport_error(url: &Url, err: &reqwest::Error) -> Error {
    let mut reason = String::new();
    let top: &dyn std::error::Error = err;
    let mut source: Option<&dyn std::error::Error> = top.source().or(Some(top));
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
    let url = url.to_string();
    if err.is_connect() {
        Error::Connect { url, reason }
    } else {
        Error::Transport { url, reason }
    }
}
