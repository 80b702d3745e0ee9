//! What an endpoint's requests measured: latency histograms, the resent count, the open-loop
//! stream counters and a generative endpoint's token measures, recorded as users report requests,
//! taken by Python at each Locust report, sent from workers to the master as one compact blob and
//! merged there.

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict};

use crate::error::{Error, Result};
use crate::measure::histogram::{
    from_bytes, micros, new_histogram, to_bytes, PyCountHistogram, PyLatencyHistogram,
};
use crate::protocol::generative::{Source, Tokens};

/// What one endpoint's reported requests measured since the last take.
#[derive(Debug, Clone, PartialEq)]
pub struct Measurements {
    /// Latency of successful requests, to the last response byte. For open-loop streams it runs
    /// from the intended send time (lag + service time).
    pub total: Histogram<u64>,
    /// Latency of successful requests, to the response head.
    pub ttfb: Histogram<u64>,
    /// Service time of successful requests: from the actual send to the last response byte (the
    /// same as `total` in a closed loop, where nothing is sent late).
    pub service: Histogram<u64>,
    /// Open-loop streams: how late each request left (actual - intended send time).
    pub lag: Histogram<u64>,
    /// Generative endpoints, successful streamed requests with a content chunk: time to the first
    /// (from the intended send time in an open loop), µs.
    pub ttft: Histogram<u64>,
    /// Generative endpoints, successful requests: every gap between consecutive content chunks, µs.
    pub itl: Histogram<u64>,
    /// Generative endpoints, successful requests of at least 2 output tokens: time per output
    /// token after the first, µs.
    pub tpot: Histogram<u64>,
    /// Generative endpoints, successful requests whose count is known: output tokens (a count,
    /// not µs).
    pub output_tokens: Histogram<u64>,
    /// Generative endpoints, successful requests whose `usage` gave it: input tokens (a count).
    pub input_tokens: Histogram<u64>,
    /// Open-loop streams: their counters.
    pub streams: StreamCounts,
    /// Generative endpoints: token counters.
    pub tokens: TokenCounts,
    /// Requests of any outcome that went out on a second connection (the pooled one was closed
    /// before any byte of the request was written).
    pub resent: u64,
    /// Closed-loop requests sent and never reported: their user was stopped (killed) while they
    /// were out, or answered and not taken. The server may have run them.
    pub abandoned: u64,
}

/// What the open-loop streams of an endpoint did since the last take.
///
/// Every request a stream scheduled ends exactly once: dropped, completed (reported) or unfinished
/// (its stream stopped first). Summed over the takes since the start, or since the last reset:
///
/// `carried + scheduled = dropped + completed + unfinished + pending`
///
/// where `pending` is what is in flight, queued, or answered but not yet reported: 0 once every
/// stream stopped (as at the end of a run). A reset (Locust's `--reset-stats`) does not forget the
/// requests pending at that moment: they become `carried`, and are completed or unfinished after it,
/// like the requests scheduled after it.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct StreamCounts {
    /// Requests scheduled before the last reset and still pending at it (in flight, queued, or
    /// answered but not reported): they end after the reset, so they are counted after it.
    pub carried: u64,
    /// Requests whose intended send time came.
    pub scheduled: u64,
    /// Requests that left.
    pub sent: u64,
    /// Requests never sent because `max_in_flight` were out (`drop` policy).
    pub dropped: u64,
    /// Requests reported (their Locust request event fired), whatever their outcome.
    pub completed: u64,
    /// Requests scheduled but neither dropped nor reported when their stream stopped: in flight,
    /// queued, or answered but not reported (untaken, or taken and never reported, as when a request
    /// listener stops the user in the middle of a batch).
    pub unfinished: u64,
    /// Streams started.
    pub started: u64,
    /// Sum of the started streams' rates (requests per second).
    pub rate: f64,
    /// Sum of the stopped streams' running times (seconds), from the last reset if later.
    pub seconds: f64,
}

impl StreamCounts {
    /// The sum of both, or an error naming the first counter that would overflow (or the rate or
    /// running time that would not be finite): a merge never wraps or saturates.
    fn checked_add(&self, o: &StreamCounts) -> Result<StreamCounts> {
        let sum = |name: &str, a: u64, b: u64| {
            a.checked_add(b)
                .ok_or_else(|| Error::protocol(format!("merging would overflow the {name} count")))
        };
        let fsum = |name: &str, a: f64, b: f64| {
            Some(a + b)
                .filter(|s| s.is_finite())
                .ok_or_else(|| Error::protocol(format!("merging would make the {name} infinite")))
        };
        Ok(StreamCounts {
            carried: sum("carried", self.carried, o.carried)?,
            scheduled: sum("scheduled", self.scheduled, o.scheduled)?,
            sent: sum("sent", self.sent, o.sent)?,
            dropped: sum("dropped", self.dropped, o.dropped)?,
            completed: sum("completed", self.completed, o.completed)?,
            unfinished: sum("unfinished", self.unfinished, o.unfinished)?,
            started: sum("streams", self.started, o.started)?,
            rate: fsum("rate", self.rate, o.rate)?,
            seconds: fsum("stream seconds", self.seconds, o.seconds)?,
        })
    }
}

/// What a generative endpoint's reported requests produced (see `protocol::generative` for how
/// tokens are counted). Over successful requests: `requests` of them had an output token count,
/// `approximate` of those by counting chunks; `no_tokens` had no content chunk (so no TTFT). On a
/// streamed endpoint every successful request has a count: `ttft.len() + no_tokens = requests =
/// total.len()`.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct TokenCounts {
    /// Output tokens of successful requests (the sum of the `output_tokens` histogram's values).
    pub output: u64,
    /// Output tokens received by failed requests before they failed (their `usage`, else their
    /// content chunks).
    pub failed_output: u64,
    /// Successful requests with an output token count.
    pub requests: u64,
    /// Successful requests whose count is their content chunks (the server gave no `usage`).
    pub approximate: u64,
    /// Successful requests without a content chunk.
    pub no_tokens: u64,
    /// Successful requests whose `usage` and `--tokenizer` counts differ (the count is `usage`'s).
    pub usage_disagreements: u64,
}

impl TokenCounts {
    /// The sum of both, or an error naming the first counter that would overflow.
    fn checked_add(&self, o: &TokenCounts) -> Result<TokenCounts> {
        let sum = |name: &str, a: u64, b: u64| {
            a.checked_add(b)
                .ok_or_else(|| Error::protocol(format!("merging would overflow the {name} count")))
        };
        Ok(TokenCounts {
            output: sum("output token", self.output, o.output)?,
            failed_output: sum("failed output token", self.failed_output, o.failed_output)?,
            requests: sum("token request", self.requests, o.requests)?,
            approximate: sum("approximate request", self.approximate, o.approximate)?,
            no_tokens: sum("no-token request", self.no_tokens, o.no_tokens)?,
            usage_disagreements: sum(
                "usage disagreement",
                self.usage_disagreements,
                o.usage_disagreements,
            )?,
        })
    }
}

/// One successful request's latencies.
#[derive(Debug, Clone, Copy)]
pub struct Latency {
    pub total: Duration,
    pub ttfb: Duration,
    pub service: Duration,
}

impl Default for Measurements {
    fn default() -> Self {
        Measurements {
            total: new_histogram(),
            ttfb: new_histogram(),
            service: new_histogram(),
            lag: new_histogram(),
            ttft: new_histogram(),
            itl: new_histogram(),
            tpot: new_histogram(),
            output_tokens: new_histogram(),
            input_tokens: new_histogram(),
            streams: StreamCounts::default(),
            tokens: TokenCounts::default(),
            resent: 0,
            abandoned: 0,
        }
    }
}

/// Starts the wire format; the version is its last byte.
const MAGIC: &[u8; 4] = b"LIM\x05";
const COUNTERS: usize = 17;
const HISTOGRAMS: usize = 9;
/// The histograms' names in failures, in wire order.
const HISTOGRAM_NAMES: [&str; HISTOGRAMS] = [
    "latency",
    "TTFB",
    "service time",
    "lag",
    "TTFT",
    "inter-token latency",
    "TPOT",
    "output token",
    "input token",
];

impl Measurements {
    /// Adds `other`'s samples and counts (a worker's report, on the master). When a count would
    /// overflow it is an error and nothing is added.
    pub fn add(&mut self, other: &Measurements) -> Result<()> {
        let (streams, tokens, [resent, abandoned]) = self.check_add(other)?;
        for (mine, theirs) in self.histograms_mut().into_iter().zip(other.histograms()) {
            mine.add(theirs)
                .map_err(|e| Error::InvalidArgument(format!("cannot merge histograms: {e:?}")))?;
        }
        self.streams = streams;
        self.tokens = tokens;
        self.resent = resent;
        self.abandoned = abandoned;
        Ok(())
    }

    /// The counters `add` would leave, or an error when one would overflow: checking the
    /// histograms' totals is enough, as none of their counts exceeds its total, which is exact
    /// (hdrhistogram saturates it and its counts; `from_bytes` refuses counts that would).
    fn check_add(&self, other: &Measurements) -> Result<(StreamCounts, TokenCounts, [u64; 2])> {
        for (name, mine, theirs) in HISTOGRAM_NAMES
            .into_iter()
            .zip(self.histograms())
            .zip(other.histograms())
            .map(|((n, a), b)| (n, a, b))
        {
            if mine.len().checked_add(theirs.len()).is_none() {
                return Err(Error::protocol(format!(
                    "merging would overflow the {name} histogram's count"
                )));
            }
        }
        let resent = self
            .resent
            .checked_add(other.resent)
            .ok_or_else(|| Error::protocol("merging would overflow the resent count"))?;
        let abandoned = self
            .abandoned
            .checked_add(other.abandoned)
            .ok_or_else(|| Error::protocol("merging would overflow the abandoned count"))?;
        Ok((
            self.streams.checked_add(&other.streams)?,
            self.tokens.checked_add(&other.tokens)?,
            [resent, abandoned],
        ))
    }

    /// Accounts for one reported generative answer (see [`Recorder::record`]). Counters saturate:
    /// a server's `usage` is any u64.
    fn record_tokens(&mut self, t: &Tokens, lag: Duration, success: bool) {
        let c = &mut self.tokens;
        if !success {
            c.failed_output = c.failed_output.saturating_add(t.received());
            return;
        }
        if let Some(ttft) = t.ttft() {
            self.ttft.saturating_record(micros(lag + ttft));
        }
        for gap in t.gaps() {
            self.itl.saturating_record(micros(gap));
        }
        if let Some(tpot) = t.tpot() {
            self.tpot.saturating_record(micros(tpot));
        }
        if let Some(n) = t.output_tokens() {
            self.output_tokens.saturating_record(n);
            c.output = c.output.saturating_add(n);
            c.requests += 1;
            c.approximate += u64::from(t.source() == Some(Source::Chunks));
            c.usage_disagreements += u64::from(t.usage_disagrees());
        }
        if let Some(n) = t.input_tokens() {
            self.input_tokens.saturating_record(n);
        }
        c.no_tokens += u64::from(t.chunks == 0);
    }

    /// Forgets what was measured (Locust's `--reset-stats`), but not how many streams run and
    /// their offered rate: they go on after the reset. `carried` starts at 0: the recorder sets it
    /// to the requests pending at the reset (see [`Recorder::reset`]).
    pub fn restart(&mut self) {
        let StreamCounts { started, rate, .. } = self.streams;
        *self = Measurements::default();
        self.streams.started = started;
        self.streams.rate = rate;
    }

    /// In wire order.
    fn histograms(&self) -> [&Histogram<u64>; HISTOGRAMS] {
        [
            &self.total,
            &self.ttfb,
            &self.service,
            &self.lag,
            &self.ttft,
            &self.itl,
            &self.tpot,
            &self.output_tokens,
            &self.input_tokens,
        ]
    }

    fn histograms_mut(&mut self) -> [&mut Histogram<u64>; HISTOGRAMS] {
        [
            &mut self.total,
            &mut self.ttfb,
            &mut self.service,
            &mut self.lag,
            &mut self.ttft,
            &mut self.itl,
            &mut self.tpot,
            &mut self.output_tokens,
            &mut self.input_tokens,
        ]
    }

    /// The wire format (version 5): magic, seventeen little-endian counters (resent, six stream
    /// counters, rate and seconds as f64, carried, the six token counters, abandoned), then each
    /// histogram (V2 encoding) after its u32 length, in [`HISTOGRAM_NAMES`] order.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let s = &self.streams;
        let mut out = Vec::with_capacity(4 + COUNTERS * 8 + HISTOGRAMS * 64);
        out.extend_from_slice(MAGIC);
        for n in [
            self.resent,
            s.scheduled,
            s.sent,
            s.dropped,
            s.completed,
            s.unfinished,
            s.started,
        ] {
            out.extend_from_slice(&n.to_le_bytes());
        }
        out.extend_from_slice(&s.rate.to_le_bytes());
        out.extend_from_slice(&s.seconds.to_le_bytes());
        out.extend_from_slice(&s.carried.to_le_bytes());
        let t = &self.tokens;
        for n in [
            t.output,
            t.failed_output,
            t.requests,
            t.approximate,
            t.no_tokens,
            t.usage_disagreements,
            self.abandoned,
        ] {
            out.extend_from_slice(&n.to_le_bytes());
        }
        for h in self.histograms() {
            let bytes = to_bytes(h)?;
            let len = u32::try_from(bytes.len())
                .map_err(|_| Error::InvalidArgument("histogram too large to send".into()))?;
            out.extend_from_slice(&len.to_le_bytes());
            out.extend_from_slice(&bytes);
        }
        Ok(out)
    }

    pub fn from_bytes(data: &[u8]) -> Result<Self> {
        let bad =
            |what: &str| Error::protocol(format!("not a locust-inference measurement: {what}"));
        let rest = data
            .strip_prefix(MAGIC.as_slice())
            .ok_or_else(|| bad("wrong header (a different version on master and worker?)"))?;
        if rest.len() < COUNTERS * 8 {
            return Err(bad("too short"));
        }
        let (counters, mut rest) = rest.split_at(COUNTERS * 8);
        let word = |i: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&counters[i * 8..i * 8 + 8]);
            b
        };
        let n = |i| u64::from_le_bytes(word(i));
        let (rate, seconds) = (f64::from_le_bytes(word(7)), f64::from_le_bytes(word(8)));
        for (name, x) in [("rate", rate), ("stream seconds", seconds)] {
            if !(x.is_finite() && x >= 0.0) {
                return Err(bad(&format!("{name} {x} is not a finite number >= 0")));
            }
        }
        let mut histograms = Vec::with_capacity(HISTOGRAMS);
        for _ in 0..HISTOGRAMS {
            let Some((len, tail)) = rest.split_first_chunk::<4>() else {
                return Err(bad("truncated"));
            };
            let len = u32::from_le_bytes(*len) as usize;
            if tail.len() < len {
                return Err(bad("truncated"));
            }
            let (bytes, tail) = tail.split_at(len);
            histograms.push(from_bytes(bytes)?);
            rest = tail;
        }
        if !rest.is_empty() {
            return Err(bad("trailing bytes"));
        }
        let [total, ttfb, service, lag, ttft, itl, tpot, output_tokens, input_tokens]: [Histogram<
            u64,
        >;
            HISTOGRAMS] = histograms.try_into().unwrap_or_else(|_| unreachable!());
        Ok(Measurements {
            total,
            ttfb,
            service,
            lag,
            ttft,
            itl,
            tpot,
            output_tokens,
            input_tokens,
            tokens: TokenCounts {
                output: n(10),
                failed_output: n(11),
                requests: n(12),
                approximate: n(13),
                no_tokens: n(14),
                usage_disagreements: n(15),
            },
            resent: n(0),
            abandoned: n(16),
            streams: StreamCounts {
                scheduled: n(1),
                sent: n(2),
                dropped: n(3),
                completed: n(4),
                unfinished: n(5),
                started: n(6),
                rate,
                seconds,
                carried: n(9),
            },
        })
    }
}

/// The [`Measurements`] of one endpoint, filled as its users report requests.
pub struct Recorder {
    current: Mutex<Current>,
    /// When the measurements were last reset (or the recorder made): a stream's running time
    /// counts from here when it started earlier.
    since: Mutex<Instant>,
}

/// What a [`Recorder`] holds under its lock.
#[derive(Default)]
struct Current {
    measurements: Measurements,
    /// The endpoint's open-loop requests scheduled and not yet dropped, reported or unfinished, over
    /// every take and reset: what a reset carries over.
    pending: u64,
}

impl Default for Recorder {
    fn default() -> Self {
        Recorder {
            current: Mutex::default(),
            since: Mutex::new(Instant::now()),
        }
    }
}

impl Recorder {
    /// Accounts for one reported request: its latencies when it succeeded (`latency`), whether
    /// it was resent, and a generative answer's tokens with how late the request left (its TTFT
    /// counts from the intended send time). A failed request's tokens count as `failed_output`.
    pub fn record(
        &self,
        latency: Option<Latency>,
        resent: bool,
        tokens: Option<(&Tokens, Duration)>,
    ) {
        self.update(|m| {
            if let Some(l) = latency {
                m.total.saturating_record(micros(l.total));
                m.ttfb.saturating_record(micros(l.ttfb));
                m.service.saturating_record(micros(l.service));
            }
            m.resent += u64::from(resent);
            if let Some((t, lag)) = tokens {
                m.record_tokens(t, lag, latency.is_some());
            }
        });
    }

    /// Accounts for `n` closed-loop requests sent and never to be reported (see
    /// [`Measurements::abandoned`]).
    pub fn abandoned(&self, n: u64) {
        self.update(|m| m.abandoned = m.abandoned.saturating_add(n));
    }

    /// Accounts for an open-loop request that left, `lag` after its intended time.
    pub fn record_sent(&self, lag: Duration) {
        self.update(|m| {
            m.lag.saturating_record(micros(lag));
            m.streams.sent += 1;
        });
    }

    fn current(&self) -> std::sync::MutexGuard<'_, Current> {
        self.current.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Changes the measurements under the lock (streams started, their rate and running time).
    pub fn update(&self, f: impl FnOnce(&mut Measurements)) {
        f(&mut self.current().measurements);
    }

    /// Accounts for an open-loop request whose intended send time came: pending until it is
    /// dropped, reported or unfinished.
    pub fn scheduled(&self) {
        let mut c = self.current();
        c.measurements.streams.scheduled += 1;
        c.pending += 1;
    }

    /// Accounts for a pending open-loop request that was never sent.
    pub fn dropped(&self) {
        let mut c = self.current();
        c.measurements.streams.dropped += 1;
        c.pending = c.pending.saturating_sub(1);
    }

    /// Accounts for a pending open-loop request that was reported.
    pub fn completed(&self) {
        let mut c = self.current();
        c.measurements.streams.completed += 1;
        c.pending = c.pending.saturating_sub(1);
    }

    /// Accounts for `n` pending open-loop requests that a stopping stream abandoned.
    pub fn unfinished(&self, n: u64) {
        let mut c = self.current();
        c.measurements.streams.unfinished += n;
        c.pending = c.pending.saturating_sub(n);
    }

    /// Returns what was recorded since the last call and starts afresh.
    pub fn take(&self) -> Measurements {
        std::mem::take(&mut self.current().measurements)
    }

    /// Forgets what was recorded since the last take (see [`Measurements::restart`]), but not the
    /// open-loop requests pending now: they are `carried` into what follows, as they end after the
    /// reset. Streams count their running time from now.
    pub fn reset(&self) {
        let mut c = self.current();
        c.measurements.restart();
        c.measurements.streams.carried = c.pending;
        *self.since.lock().unwrap_or_else(PoisonError::into_inner) = Instant::now();
    }

    /// How long a stream that started at `start` has run, from the last reset if that is later.
    pub fn running_time(&self, start: Instant) -> Duration {
        let since = *self.since.lock().unwrap_or_else(PoisonError::into_inner);
        start.max(since).elapsed()
    }
}

/// What an endpoint's requests measured (histograms, resent count, stream counters); workers send
/// it to the master with `to_bytes`, the master merges with `add`.
#[pyclass(module = "locust_inference._native", name = "Measurements")]
#[derive(Default)]
pub struct PyMeasurements {
    pub inner: Measurements,
}

#[pymethods]
impl PyMeasurements {
    #[new]
    fn new() -> Self {
        PyMeasurements::default()
    }

    /// Measurements holding copies of these histograms and this resent count, with no open-loop
    /// counters: what a worker would send after recording those latencies (benchmarks and tests
    /// build worker reports with it).
    #[staticmethod]
    #[pyo3(signature = (total, ttfb, service, lag, *, resent = 0))]
    fn from_histograms(
        total: &PyLatencyHistogram,
        ttfb: &PyLatencyHistogram,
        service: &PyLatencyHistogram,
        lag: &PyLatencyHistogram,
        resent: u64,
    ) -> Self {
        PyMeasurements {
            inner: Measurements {
                total: total.inner.clone(),
                ttfb: ttfb.inner.clone(),
                service: service.inner.clone(),
                lag: lag.inner.clone(),
                resent,
                ..Measurements::default()
            },
        }
    }

    /// Latency of successful requests to the last byte (from the intended send time in an open loop).
    #[getter]
    fn total(&self) -> PyLatencyHistogram {
        PyLatencyHistogram::wrap(self.inner.total.clone())
    }

    /// Latency of successful requests to the response head.
    #[getter]
    fn ttfb(&self) -> PyLatencyHistogram {
        PyLatencyHistogram::wrap(self.inner.ttfb.clone())
    }

    /// Service time of successful requests, from the actual send.
    #[getter]
    fn service(&self) -> PyLatencyHistogram {
        PyLatencyHistogram::wrap(self.inner.service.clone())
    }

    /// Open-loop lag: actual - intended send time.
    #[getter]
    fn lag(&self) -> PyLatencyHistogram {
        PyLatencyHistogram::wrap(self.inner.lag.clone())
    }

    /// Generative endpoints: time to first token of successful streamed requests (from the
    /// intended send time in an open loop).
    #[getter]
    fn ttft(&self) -> PyLatencyHistogram {
        PyLatencyHistogram::wrap(self.inner.ttft.clone())
    }

    /// Generative endpoints: every gap between consecutive content chunks of successful requests.
    #[getter]
    fn itl(&self) -> PyLatencyHistogram {
        PyLatencyHistogram::wrap(self.inner.itl.clone())
    }

    /// Generative endpoints: time per output token after the first, successful requests.
    #[getter]
    fn tpot(&self) -> PyLatencyHistogram {
        PyLatencyHistogram::wrap(self.inner.tpot.clone())
    }

    /// Generative endpoints: output tokens per successful request (a count).
    #[getter]
    fn output_tokens(&self) -> PyCountHistogram {
        PyCountHistogram::wrap(self.inner.output_tokens.clone())
    }

    /// Generative endpoints: input tokens per successful request, from `usage` (a count).
    #[getter]
    fn input_tokens(&self) -> PyCountHistogram {
        PyCountHistogram::wrap(self.inner.input_tokens.clone())
    }

    /// Generative endpoints' token counters: output_tokens_total, output_tokens_failed,
    /// token_requests, approximate_requests, no_token_requests, usage_disagreements (see
    /// [`TokenCounts`]).
    #[getter]
    fn tokens<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let c = self.inner.tokens;
        let d = PyDict::new(py);
        d.set_item("output_tokens_total", c.output)?;
        d.set_item("output_tokens_failed", c.failed_output)?;
        d.set_item("token_requests", c.requests)?;
        d.set_item("approximate_requests", c.approximate)?;
        d.set_item("no_token_requests", c.no_tokens)?;
        d.set_item("usage_disagreements", c.usage_disagreements)?;
        Ok(d)
    }

    /// Requests of any outcome that were resent.
    #[getter]
    fn resent(&self) -> u64 {
        self.inner.resent
    }

    /// Closed-loop requests sent and never reported: their user was stopped while they were out.
    #[getter]
    fn abandoned(&self) -> u64 {
        self.inner.abandoned
    }

    /// The open-loop counters: carried, scheduled, sent, dropped, completed, unfinished, streams,
    /// rate, stream_seconds (see [`StreamCounts`] for the identity between them).
    #[getter]
    fn streams<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let c = self.inner.streams;
        let d = PyDict::new(py);
        d.set_item("carried", c.carried)?;
        d.set_item("scheduled", c.scheduled)?;
        d.set_item("sent", c.sent)?;
        d.set_item("dropped", c.dropped)?;
        d.set_item("completed", c.completed)?;
        d.set_item("unfinished", c.unfinished)?;
        d.set_item("streams", c.started)?;
        d.set_item("rate", c.rate)?;
        d.set_item("stream_seconds", c.seconds)?;
        Ok(d)
    }

    /// Adds `other`; raises ProtocolError, adding nothing, when a count would overflow.
    fn add(&mut self, other: &PyMeasurements) -> PyResult<()> {
        Ok(self.inner.add(&other.inner)?)
    }

    /// Raises ProtocolError when `add(other)` would (a count would overflow); changes nothing.
    fn check_add(&self, other: &PyMeasurements) -> PyResult<()> {
        self.inner.check_add(&other.inner)?;
        Ok(())
    }

    /// Forgets what was measured, keeping the number of streams and their offered rate.
    fn restart(&mut self) {
        self.inner.restart();
    }

    fn to_bytes<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyBytes>> {
        Ok(PyBytes::new(py, &self.inner.to_bytes()?))
    }

    #[staticmethod]
    fn from_bytes(data: &[u8]) -> PyResult<Self> {
        Ok(PyMeasurements {
            inner: Measurements::from_bytes(data)?,
        })
    }

    fn __eq__(&self, other: &PyMeasurements) -> bool {
        self.inner == other.inner
    }

    fn __repr__(&self) -> String {
        format!(
            "Measurements(count={}, resent={}, streams={})",
            self.inner.total.len(),
            self.inner.resent,
            self.inner.streams.started
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alloc_meter::measure;
    use crate::measure::histogram::HIGHEST_US;
    use proptest::prelude::*;

    fn latency(total: Duration, ttfb: Duration) -> Latency {
        Latency {
            total,
            ttfb,
            service: total,
        }
    }

    #[test]
    fn recorder_takes_and_starts_afresh() {
        let r = Recorder::default();
        r.record(
            Some(latency(
                Duration::from_micros(20_500),
                Duration::from_millis(20),
            )),
            false,
            None,
        );
        r.record(
            Some(latency(Duration::from_nanos(10), Duration::from_secs(100))),
            true,
            None,
        );
        r.record_sent(Duration::from_millis(3));
        r.record(None, true, None);
        let m = r.take();
        assert_eq!(m.total.len(), 2);
        assert_eq!(m.total.min(), 1);
        assert_eq!(m.ttfb.max(), m.ttfb.highest_equivalent(HIGHEST_US));
        assert_eq!(m.resent, 2, "resent requests count whatever their outcome");
        assert_eq!((m.service.len(), m.lag.len(), m.streams.sent), (2, 1, 1));
        let again = r.take();
        assert_eq!(
            (
                again.total.len(),
                again.lag.len(),
                again.resent,
                again.streams
            ),
            (0, 0, 0, StreamCounts::default())
        );
    }

    /// A streamed answer's measures: TTFT from the intended send (lag + TTFT), the gaps between
    /// chunks, and the counters; a failed one counts only its tokens received.
    #[test]
    fn generated_tokens_are_recorded_by_the_success_rule() {
        let ms = Duration::from_millis;
        let tokens = Tokens {
            streamed: true,
            chunks: 3,
            times: vec![ms(10), ms(25), ms(45)],
            usage_output: None,
            usage_input: None,
            counted: None,
            prompt_counted: None,
        };
        let r = Recorder::default();
        r.record(Some(latency(ms(80), ms(5))), false, Some((&tokens, ms(30))));
        r.record(None, false, Some((&tokens, ms(30))));
        let m = r.take();
        let at = |h: &Histogram<u64>, us: u64| h.highest_equivalent(us);
        assert_eq!((m.ttft.len(), m.ttft.max()), (1, at(&m.ttft, 40_000)));
        assert_eq!(m.itl.len(), 2);
        assert_eq!(
            (m.itl.min(), m.itl.max()),
            (m.itl.lowest_equivalent(15_000), at(&m.itl, 20_000))
        );
        assert_eq!((m.tpot.len(), m.tpot.max()), (1, at(&m.tpot, 17_500)));
        assert_eq!((m.output_tokens.len(), m.output_tokens.max()), (1, 3));
        assert_eq!(m.input_tokens.len(), 0, "no usage");
        assert_eq!(
            m.tokens,
            TokenCounts {
                output: 3,
                failed_output: 3,
                requests: 1,
                approximate: 1,
                no_tokens: 0,
                usage_disagreements: 0,
            }
        );
        // usage counts; a tokenizer count that differs is one disagreement, of successes only
        let r = Recorder::default();
        for (counted, success) in [
            (Some(3), true),
            (Some(4), true),
            (Some(3), false),
            (None, true),
        ] {
            let t = Tokens {
                usage_output: Some(4),
                counted,
                ..tokens.clone()
            };
            r.record(
                success.then(|| latency(ms(80), ms(5))),
                false,
                Some((&t, ms(0))),
            );
        }
        let c = r.take().tokens;
        assert_eq!((c.output, c.approximate, c.usage_disagreements), (12, 0, 1));
    }

    #[test]
    fn reset_keeps_the_running_streams() {
        let r = Recorder::default();
        r.update(|m| {
            m.streams.started = 2;
            m.streams.rate = 60.0;
            m.streams.scheduled = 7;
        });
        r.record(
            Some(latency(Duration::from_millis(5), Duration::from_millis(4))),
            true,
            None,
        );
        let before = Instant::now();
        std::thread::sleep(Duration::from_millis(20));
        r.reset();
        let m = r.take();
        assert_eq!(m.total.len(), 0);
        assert_eq!(m.resent, 0);
        assert_eq!(
            m.streams,
            StreamCounts {
                started: 2,
                rate: 60.0,
                ..StreamCounts::default()
            }
        );
        // a stream started before the reset has run only since the reset
        assert!(r.running_time(before) + Duration::from_millis(20) <= before.elapsed());
    }

    #[test]
    fn bad_bytes_are_protocol_errors() {
        let bytes = Measurements::default().to_bytes().unwrap();
        let version_2 = [&b"LIM\x02"[..], &bytes[4..]].concat();
        // version 4, the one before abandoned: a counter shorter
        let mut version_4 = b"LIM\x04".to_vec();
        version_4.extend_from_slice(&bytes[4..4 + 16 * 8]);
        version_4.extend_from_slice(&bytes[4 + COUNTERS * 8..]);
        for broken in [
            &b"nope"[..],
            &version_2,
            &version_4,
            &bytes[..bytes.len() - 1],
            &bytes[..10],
            &[bytes.as_slice(), b"x"].concat(),
        ] {
            assert!(matches!(
                Measurements::from_bytes(broken),
                Err(Error::Protocol(_))
            ));
        }
    }

    /// What decoding `len` bytes may allocate: our histograms, a copy of the bytes, and room for
    /// an error message.
    fn allowed(len: usize) -> usize {
        let (_, histograms) = measure(|| [0; HISTOGRAMS].map(|_| new_histogram()));
        histograms + 2 * len + 4096
    }

    /// Where each histogram's V2 header starts in `bytes` (a valid encoding).
    fn histogram_offsets(bytes: &[u8]) -> Vec<usize> {
        let mut at = 4 + COUNTERS * 8;
        let mut starts = Vec::new();
        while at < bytes.len() {
            let len = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
            starts.push(at + 4);
            at += 4 + len;
        }
        starts
    }

    #[test]
    fn a_report_whose_histogram_claims_4_gib_is_refused_without_allocating_them() {
        let bytes = Measurements::default().to_bytes().unwrap();
        let offsets = histogram_offsets(&bytes);
        assert_eq!(offsets.len(), HISTOGRAMS);
        for h in offsets {
            let mut forged = bytes.clone();
            forged[h + 4..h + 8].copy_from_slice(&u32::MAX.to_be_bytes());
            let (result, used) = measure(|| Measurements::from_bytes(&forged));
            assert!(matches!(result, Err(Error::Protocol(_))), "{result:?}");
            assert!(used <= allowed(forged.len()), "{used} bytes allocated");
        }
    }

    #[test]
    fn rates_and_seconds_must_be_finite_and_not_negative() {
        for bad in [
            f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
            -1.0,
            -f64::MIN_POSITIVE,
        ] {
            for field in [7, 8] {
                let mut bytes = Measurements::default().to_bytes().unwrap();
                let at = 4 + field * 8;
                bytes[at..at + 8].copy_from_slice(&bad.to_le_bytes());
                let err = Measurements::from_bytes(&bytes).unwrap_err();
                assert!(err.to_string().contains("not a finite number"), "{err}");
            }
        }
    }

    #[test]
    fn a_merge_that_would_overflow_is_an_error_and_adds_nothing() {
        let with = |f: &dyn Fn(&mut Measurements)| {
            let mut m = Measurements::default();
            m.streams.rate = 1.0;
            f(&mut m);
            m
        };
        let one = with(&|m| {
            m.resent = 1;
            m.abandoned = 1;
            m.streams.sent = 1;
            m.tokens.output = 1;
            m.tokens.no_tokens = 1;
            m.total.record_n(9, 2).unwrap();
            m.itl.record_n(9, 2).unwrap();
            m.input_tokens.record_n(9, 2).unwrap();
        });
        for (mine, theirs) in [
            (with(&|m| m.resent = u64::MAX), &one),
            (with(&|m| m.abandoned = u64::MAX), &one),
            (with(&|m| m.streams.sent = u64::MAX), &one),
            (with(&|m| m.tokens.output = u64::MAX), &one),
            (with(&|m| m.tokens.no_tokens = u64::MAX), &one),
            (
                with(&|m| {
                    m.itl.record_n(5, i64::MAX as u64).unwrap();
                    m.itl.record_n(7, i64::MAX as u64).unwrap();
                }),
                &one,
            ),
            (
                with(&|m| {
                    m.input_tokens.record_n(5, i64::MAX as u64).unwrap();
                    m.input_tokens.record_n(7, i64::MAX as u64).unwrap();
                }),
                &one,
            ),
            (
                with(&|m| m.streams.rate = f64::MAX),
                &with(&|m| m.streams.rate = f64::MAX),
            ),
            // two counts of i64::MAX, as a worker may send them: a total of 2^64 - 2
            (
                with(&|m| {
                    m.total.record_n(5, i64::MAX as u64).unwrap();
                    m.total.record_n(7, i64::MAX as u64).unwrap();
                }),
                &one,
            ),
        ] {
            let mut merged = mine.clone();
            let result = merged.add(theirs);
            assert!(matches!(result, Err(Error::Protocol(_))), "{result:?}");
            assert!(merged == mine, "a refused merge added something");
        }
    }

    fn arbitrary() -> impl Strategy<Value = Measurements> {
        (
            prop::collection::vec(0u64..60_000_000, 0..80),
            prop::array::uniform9(0u64..1_000_000),
            prop::array::uniform6(0u64..1_000_000),
            0.0f64..1e6,
            0.0f64..1e6,
        )
            .prop_map(|(samples, n, t, rate, seconds)| {
                let mut m = Measurements::default();
                for (i, s) in samples.iter().enumerate() {
                    m.histograms_mut()[i % HISTOGRAMS].saturating_record(*s);
                }
                m.tokens = TokenCounts {
                    output: t[0],
                    failed_output: t[1],
                    requests: t[2],
                    approximate: t[3],
                    no_tokens: t[4],
                    usage_disagreements: t[5],
                };
                m.resent = n[0];
                m.abandoned = n[8];
                m.streams = StreamCounts {
                    scheduled: n[1],
                    sent: n[2],
                    dropped: n[3],
                    completed: n[4],
                    unfinished: n[5],
                    started: n[6],
                    carried: n[7],
                    rate,
                    seconds,
                };
                m
            })
    }

    /// What a recorder's open-loop counters go through: (what happens, how many).
    #[derive(Debug, Clone, Copy)]
    enum Event {
        Scheduled,
        Dropped,
        Completed,
        Unfinished,
        Take,
        Reset,
    }

    fn events() -> impl Strategy<Value = Vec<Event>> {
        prop::collection::vec(
            prop_oneof![
                4 => Just(Event::Scheduled),
                1 => Just(Event::Dropped),
                3 => Just(Event::Completed),
                1 => Just(Event::Unfinished),
                1 => Just(Event::Take),
                1 => Just(Event::Reset),
            ],
            0..200,
        )
    }

    proptest! {
        /// carried + scheduled = dropped + completed + unfinished + pending over the takes since
        /// the last reset, whenever the reset comes (a stream only ends requests it scheduled).
        #[test]
        fn a_reset_keeps_the_identity(events in events()) {
            let r = Recorder::default();
            let mut pending = 0u64;
            let mut since_reset = StreamCounts::default();
            for e in events {
                match e {
                    Event::Scheduled => {
                        r.scheduled();
                        pending += 1;
                    }
                    Event::Dropped | Event::Completed | Event::Unfinished if pending == 0 => {}
                    Event::Dropped => {
                        r.dropped();
                        pending -= 1;
                    }
                    Event::Completed => {
                        r.completed();
                        pending -= 1;
                    }
                    Event::Unfinished => {
                        let n = pending.div_ceil(2);
                        r.unfinished(n);
                        pending -= n;
                    }
                    Event::Take => {
                        since_reset = since_reset.checked_add(&r.take().streams).unwrap();
                    }
                    Event::Reset => {
                        r.reset();
                        since_reset = StreamCounts::default();
                    }
                }
                let now = since_reset
                    .checked_add(&r.current().measurements.streams)
                    .unwrap();
                prop_assert_eq!(
                    now.carried + now.scheduled,
                    now.dropped + now.completed + now.unfinished + pending,
                    "{:?}", now
                );
            }
        }

        /// For streamed answers of any shape and outcome: ttft + no_tokens = requests = total,
        /// and the output tokens split into those of successes and of failures.
        #[test]
        fn streamed_answers_keep_the_token_identities(
            answers in prop::collection::vec(
                (
                    prop::collection::vec(0u64..100_000, 0..6),
                    prop::option::of(0u64..1_000),
                    any::<bool>(),
                ),
                0..30,
            ),
        ) {
            let r = Recorder::default();
            let mut all = 0u64;
            for (mut times, usage, success) in answers {
                times.sort_unstable();
                let tokens = Tokens {
                    streamed: true,
                    chunks: times.len() as u64,
                    times: times.into_iter().map(Duration::from_micros).collect(),
                    usage_output: usage,
                    usage_input: None,
                    counted: None,
                    prompt_counted: None,
                };
                all += tokens.received();
                let l = success.then(|| latency(Duration::from_millis(9), Duration::from_millis(1)));
                r.record(l, false, Some((&tokens, Duration::ZERO)));
            }
            let m = r.take();
            let t = m.tokens;
            prop_assert_eq!(m.ttft.len() + t.no_tokens, t.requests);
            prop_assert_eq!(t.requests, m.total.len());
            prop_assert_eq!(t.output + t.failed_output, all);
            prop_assert_eq!(m.output_tokens.len(), t.requests);
        }

        #[test]
        fn arbitrary_bytes_never_panic_nor_allocate_much(
            tail in prop::collection::vec(any::<u8>(), 0..800),
            magic in any::<bool>(),
        ) {
            let bytes = if magic { [MAGIC.as_slice(), &tail].concat() } else { tail };
            let (_, used) = measure(|| Measurements::from_bytes(&bytes));
            prop_assert!(used <= allowed(bytes.len()), "{} bytes allocated", used);
        }

        #[test]
        fn mutated_reports_never_panic_nor_allocate_much(
            m in arbitrary(),
            edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..8),
            header_word in prop::option::of((0usize..HISTOGRAMS, 1usize..10, any::<u32>())),
            cut in any::<prop::sample::Index>(),
        ) {
            let mut bytes = m.to_bytes().unwrap();
            if let Some((h, word, value)) = header_word {
                let at = histogram_offsets(&bytes)[h] + word * 4;
                bytes[at..at + 4].copy_from_slice(&value.to_be_bytes());
            }
            for (at, b) in edits {
                let i = at.index(bytes.len());
                bytes[i] = b;
            }
            bytes.truncate(cut.index(bytes.len() + 1));
            let (_, used) = measure(|| Measurements::from_bytes(&bytes));
            prop_assert!(used <= allowed(bytes.len()), "{} bytes allocated", used);
        }

        #[test]
        fn bytes_round_trip(m in arbitrary()) {
            let back = Measurements::from_bytes(&m.to_bytes().unwrap()).unwrap();
            prop_assert!(back == m);
        }

        #[test]
        fn merging_sent_parts_equals_recording_all(a in arbitrary(), b in arbitrary()) {
            let mut merged = Measurements::from_bytes(&a.to_bytes().unwrap()).unwrap();
            merged.add(&Measurements::from_bytes(&b.to_bytes().unwrap()).unwrap()).unwrap();
            for (m, (x, y)) in merged.histograms().into_iter().zip(a.histograms().into_iter().zip(b.histograms())) {
                prop_assert_eq!(m.len(), x.len() + y.len());
                let mut both = x.clone();
                both.add(y).unwrap();
                prop_assert!(*m == both);
            }
            prop_assert_eq!(merged.resent, a.resent + b.resent);
            prop_assert_eq!(merged.abandoned, a.abandoned + b.abandoned);
            prop_assert_eq!(merged.streams.dropped, a.streams.dropped + b.streams.dropped);
            prop_assert_eq!(merged.streams.started, a.streams.started + b.streams.started);
            prop_assert_eq!(merged.tokens.output, a.tokens.output + b.tokens.output);
            prop_assert_eq!(merged.tokens.no_tokens, a.tokens.no_tokens + b.tokens.no_tokens);
        }
    }
}
