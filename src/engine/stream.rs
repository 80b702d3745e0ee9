//! Open-loop load: a [`Stream`] sends one endpoint's request on a schedule that does not depend on
//! the answers (see `schedule`), on the I/O runtime, with at most `max_in_flight` out at once.
//! Completions queue in an [`Inbox`] whose eventfd wakes the user's greenlet, which takes several
//! at a time.
//!
//! Send times come from a microsecond timer (see `timer`) armed for the intended instant computed
//! from the stream's start, so neither Python nor a late send shifts the ones after it. Each completion
//! carries its intended and actual send times: its response time runs from the intended one
//! (what a user of a 30 fps camera waits), its service time from the actual one.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use pyo3::prelude::*;
use tokio::sync::Semaphore;
use tokio::task::{AbortHandle, JoinSet};
use tokio::time::Instant;

use crate::engine::endpoint::{Endpoint, Outcome, PyEndpoint, PyOutcome};
use crate::engine::rotation::Rotation;
use crate::engine::runtime;
use crate::engine::schedule::{decide, Arrival, Decision, Overload, Schedule};
use crate::engine::timer::Timer;
use crate::engine::wake::Inbox;
use crate::error::{Error, Result};
use crate::measure::histogram::{micros, new_histogram, PyLatencyHistogram};

/// One answered request of a stream.
pub struct Completion {
    pub outcome: Outcome,
    /// When it was meant to leave, from the stream's start.
    pub intended: Duration,
    /// When it left, from the stream's start.
    pub sent: Duration,
    /// The id of the stream that sent it (only that stream records it).
    pub stream: u64,
}

impl Completion {
    /// How late it left.
    pub fn lag(&self) -> Duration {
        self.sent.saturating_sub(self.intended)
    }

    /// From the intended send time to the last response byte (or the failure).
    pub fn response_time(&self) -> Duration {
        self.lag() + self.outcome.response_time
    }

    /// From the intended send time to the first content chunk of a streamed answer.
    pub fn ttft(&self) -> Option<Duration> {
        Some(self.lag() + self.outcome.tokens.as_ref()?.ttft()?)
    }
}

/// A stream's own counters, from its start (the endpoint's recorder gets the same events for the
/// run's report). Once stopped: `scheduled = dropped + reported + unfinished`, the unfinished ones
/// counted at the stop, whether they were in flight, queued, or answered but not reported.
#[derive(Debug, Default, Clone, Copy)]
struct Counts {
    scheduled: u64,
    sent: u64,
    dropped: u64,
    /// Answered (queued in the inbox).
    completed: u64,
    /// Taken from the inbox.
    delivered: u64,
    /// Reported with `record`: a taken answer that is never reported counts as unfinished.
    reported: u64,
    stopped: bool,
}

/// Stream ids, unique in the process.
static STREAM_IDS: AtomicU64 = AtomicU64::new(0);

struct Shared {
    id: u64,
    endpoint: Arc<Endpoint>,
    /// The stream's walk through the endpoint's bodies, in send order.
    rotation: Mutex<Rotation>,
    inbox: Inbox<Completion>,
    counts: Mutex<Counts>,
    lag: Mutex<hdrhistogram::Histogram<u64>>,
}

impl Shared {
    fn counts(&self) -> std::sync::MutexGuard<'_, Counts> {
        self.counts.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Counts a request whose intended time came; false once the stream is stopped.
    fn scheduled(&self) -> bool {
        let mut c = self.counts();
        if c.stopped {
            return false;
        }
        c.scheduled += 1;
        self.endpoint.latency.scheduled();
        true
    }

    fn dropped(&self) {
        let mut c = self.counts();
        if !c.stopped {
            c.dropped += 1;
            self.endpoint.latency.dropped();
        }
    }

    /// Counts a request leaving `lag` late; false once the stream is stopped.
    fn sent(&self, lag: Duration) -> bool {
        let mut c = self.counts();
        if c.stopped {
            return false;
        }
        c.sent += 1;
        self.lag
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .saturating_record(micros(lag));
        self.endpoint.latency.record_sent(lag);
        true
    }

    fn completed(&self, completion: Completion) {
        let mut c = self.counts();
        if self.inbox.push(completion) {
            c.completed += 1;
        }
    }
}

/// The settings of one stream.
#[derive(Debug, Clone, Copy)]
pub struct StreamConfig {
    pub rate: f64,
    pub arrival: Arrival,
    pub max_in_flight: usize,
    pub overload: Overload,
    /// Orders the walk through a shuffling endpoint's bodies.
    pub shuffle_seed: Option<u64>,
}

/// An open-loop stream of one endpoint's request, running from its creation until [`Stream::stop`]
/// (or drop).
pub struct Stream {
    shared: Arc<Shared>,
    driver: AbortHandle,
    start: Instant,
    config: StreamConfig,
}

impl Stream {
    pub(crate) fn start(endpoint: Arc<Endpoint>, config: StreamConfig) -> Result<Self> {
        let schedule = Schedule::new(config.rate, config.arrival)?;
        if config.max_in_flight == 0 {
            return Err(Error::InvalidArgument(
                "max_in_flight must be at least 1".into(),
            ));
        }
        if config.max_in_flight > Semaphore::MAX_PERMITS {
            // tokio's semaphore panics beyond this, in the stream's task, where nobody would hear
            return Err(Error::InvalidArgument(format!(
                "max_in_flight must be at most {}, got {}",
                Semaphore::MAX_PERMITS,
                config.max_in_flight
            )));
        }
        let inbox =
            Inbox::new().map_err(|e| Error::Runtime(format!("cannot create an eventfd: {e}")))?;
        let rt = runtime::runtime()?;
        endpoint.latency.update(|m| {
            m.streams.started += 1;
            m.streams.rate += config.rate;
        });
        let shared = Arc::new(Shared {
            id: STREAM_IDS.fetch_add(1, Ordering::Relaxed),
            rotation: Mutex::new(endpoint.rotation(config.shuffle_seed)),
            endpoint,
            inbox,
            counts: Mutex::new(Counts::default()),
            lag: Mutex::new(new_histogram()),
        });
        let timer = {
            let _runtime = rt.enter(); // the timer registers with this runtime's reactor
            Timer::new().map_err(|e| Error::Runtime(format!("cannot create a timerfd: {e}")))?
        };
        let start = Instant::now();
        let driver = rt
            .spawn(drive(Arc::clone(&shared), schedule, config, start, timer))
            .abort_handle();
        Ok(Stream {
            shared,
            driver,
            start,
            config,
        })
    }

    pub fn fd(&self) -> &crate::engine::wake::EventFd {
        self.shared.inbox.fd()
    }

    /// Every completion that arrived since the last call, oldest first.
    pub fn take(&self) -> Vec<Completion> {
        let mut c = self.shared.counts();
        let taken = self.shared.inbox.take_all();
        c.delivered += taken.len() as u64;
        taken
    }

    /// Stops sending and abandons the requests in flight. Returns how many scheduled requests
    /// were neither dropped nor reported (in flight, queued, or answered but untaken or taken and
    /// not reported); 0 when already stopped.
    pub fn stop(&self) -> u64 {
        let mut c = self.shared.counts();
        if c.stopped {
            return 0;
        }
        c.stopped = true;
        self.driver.abort(); // its JoinSet aborts the requests in flight
        self.shared.inbox.close();
        let unfinished = c.scheduled.saturating_sub(c.dropped + c.reported);
        let seconds = self
            .shared
            .endpoint
            .latency
            .running_time(self.start.into_std())
            .as_secs_f64();
        let recorder = &self.shared.endpoint.latency;
        recorder.unfinished(unfinished);
        recorder.update(|m| m.streams.seconds += seconds);
        unfinished
    }

    /// Accounts for a taken completion as it is reported: its latencies when it succeeded
    /// (`success`) and one completed request. Refused once the stream stopped (it counted the
    /// completion as unfinished then), and for a completion this stream did not hand over.
    pub fn record(&self, completion: &Completion, success: bool) -> Result<()> {
        let mut c = self.shared.counts();
        if completion.stream != self.shared.id {
            return Err(Error::InvalidArgument(
                "this completion is not one of this stream's".into(),
            ));
        }
        if c.stopped {
            return Err(Error::InvalidArgument(
                "the stream stopped: its unreported completions counted as unfinished".into(),
            ));
        }
        if c.reported >= c.delivered {
            return Err(Error::InvalidArgument(
                "more completions reported than taken".into(),
            ));
        }
        c.reported += 1;
        let recorder = &self.shared.endpoint.latency;
        let tokens = completion.outcome.tokens.as_deref();
        recorder.record(
            completion
                .outcome
                .latency(success, completion.response_time()),
            completion.outcome.resent,
            tokens.map(|t| (t, completion.lag())),
        );
        recorder.completed();
        Ok(())
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Runs the schedule: the timer is armed for each intended time, then the request is sent,
/// dropped or queued; queued requests leave in order as slots free.
async fn drive(
    shared: Arc<Shared>,
    mut schedule: Schedule,
    config: StreamConfig,
    start: Instant,
    timer: Timer,
) {
    let slots = Arc::new(Semaphore::new(config.max_in_flight));
    let mut queue: VecDeque<Duration> = VecDeque::new();
    let mut in_flight = JoinSet::new();
    let mut next = schedule.next_offset();
    let mut armed = timer.arm(start + next);
    loop {
        if let Err(e) = armed {
            // Cannot happen with a valid timerfd; what was scheduled and not answered shows as
            // unfinished when the user stops.
            eprintln!("locust-inference: open-loop stream stopped: cannot arm its timer: {e}");
            return;
        }
        tokio::select! {
            biased;
            Some(_) = in_flight.join_next(), if !in_flight.is_empty() => {}
            permit = Arc::clone(&slots).acquire_owned(), if !queue.is_empty() => {
                let (Ok(permit), Some(intended)) = (permit, queue.pop_front()) else { return };
                launch(&mut in_flight, &shared, permit, intended, start);
            }
            expired = timer.expired() => {
                if expired.is_err() || !shared.scheduled() {
                    return;
                }
                let out = config.max_in_flight - slots.available_permits();
                match decide(config.overload, out, config.max_in_flight, queue.len()) {
                    Decision::Send => match Arc::clone(&slots).try_acquire_owned() {
                        Ok(permit) => launch(&mut in_flight, &shared, permit, next, start),
                        Err(_) => queue.push_back(next), // cannot happen: a slot was free
                    },
                    Decision::Drop => shared.dropped(),
                    Decision::Enqueue => queue.push_back(next),
                }
                next = schedule.next_offset();
                armed = timer.arm(start + next);
            }
        }
    }
}

fn launch(
    tasks: &mut JoinSet<()>,
    shared: &Arc<Shared>,
    permit: tokio::sync::OwnedSemaphorePermit,
    intended: Duration,
    start: Instant,
) {
    let index = shared
        .rotation
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .next_index();
    let shared = Arc::clone(shared);
    tasks.spawn(async move {
        let sent = start.elapsed();
        if !shared.sent(sent.saturating_sub(intended)) {
            return;
        }
        let outcome = shared.endpoint.run(index).await;
        shared.completed(Completion {
            outcome,
            intended,
            sent,
            stream: shared.id,
        });
        drop(permit);
    });
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// An open-loop stream, started on creation.
#[pyclass(frozen, module = "locust_inference._native", name = "Stream")]
pub struct PyStream {
    inner: Stream,
}

#[pymethods]
impl PyStream {
    #[new]
    #[pyo3(signature = (endpoint, rate, *, arrival = "constant", seed = 0, max_in_flight = 4, overload = "drop"))]
    fn new(
        endpoint: &PyEndpoint,
        rate: f64,
        arrival: &str,
        seed: u64,
        max_in_flight: usize,
        overload: &str,
    ) -> PyResult<Self> {
        let arrival = match arrival {
            "constant" => Arrival::Constant,
            "poisson" => Arrival::Poisson { seed },
            other => {
                return Err(Error::InvalidArgument(format!(
                    "arrival must be 'constant' or 'poisson', not {other:?}"
                ))
                .into())
            }
        };
        let config = StreamConfig {
            rate,
            arrival,
            max_in_flight,
            overload: Overload::parse(overload)?,
            shuffle_seed: Some(seed),
        };
        Ok(PyStream {
            inner: Stream::start(Arc::clone(&endpoint.inner), config)?,
        })
    }

    /// The eventfd that is readable while completions wait.
    fn fileno(&self) -> i32 {
        self.inner.fd().raw()
    }

    /// Every completion that arrived since the last call, oldest first.
    fn take(&self) -> Vec<PyCompletion> {
        self.inner
            .take()
            .into_iter()
            .map(|inner| PyCompletion {
                inner,
                reported: AtomicBool::new(false),
            })
            .collect()
    }

    /// Blocks the calling thread (without the GIL) until a completion waits or `timeout` seconds
    /// pass, then takes them all. For plain Python callers; greenlets wait on `fileno()`.
    #[pyo3(signature = (timeout = None))]
    fn wait(&self, py: Python<'_>, timeout: Option<f64>) -> Vec<PyCompletion> {
        let ms = timeout.map_or(-1, |t| (t * 1000.0).clamp(0.0, f64::from(i32::MAX)) as i32);
        py.detach(|| self.inner.fd().poll(ms));
        self.take()
    }

    /// Accounts for a taken completion as it is reported: its latencies when it succeeded
    /// (`success`, false when a check made in Python failed it) and one completed request.
    /// ValueError for a completion already recorded, one of another stream, or once the stream
    /// stopped (which counted every taken completion not recorded yet as unfinished).
    #[pyo3(signature = (completion, success = true))]
    fn record(&self, completion: &PyCompletion, success: bool) -> PyResult<()> {
        if completion.reported.swap(true, Ordering::Relaxed) {
            return Err(
                Error::InvalidArgument("this completion was already recorded".into()).into(),
            );
        }
        let recorded = self.inner.record(&completion.inner, success);
        if recorded.is_err() {
            completion.reported.store(false, Ordering::Relaxed);
        }
        Ok(recorded?)
    }

    /// Stops the schedule and abandons requests in flight; returns how many scheduled requests
    /// will never be reported (in flight, queued or untaken). 0 when already stopped.
    fn stop(&self) -> u64 {
        self.inner.stop()
    }

    /// The stream's counters, from its start: scheduled, sent, dropped, completed (answered),
    /// delivered (taken), reported (recorded).
    fn counts(&self) -> std::collections::HashMap<&'static str, u64> {
        let c = *self.inner.shared.counts();
        [
            ("scheduled", c.scheduled),
            ("sent", c.sent),
            ("dropped", c.dropped),
            ("completed", c.completed),
            ("delivered", c.delivered),
            ("reported", c.reported),
        ]
        .into_iter()
        .collect()
    }

    /// How late this stream's requests left (actual - intended send time).
    fn lag(&self) -> PyLatencyHistogram {
        PyLatencyHistogram::wrap(
            self.inner
                .shared
                .lag
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone(),
        )
    }

    #[getter]
    fn rate(&self) -> f64 {
        self.inner.config.rate
    }

    #[getter]
    fn max_in_flight(&self) -> usize {
        self.inner.config.max_in_flight
    }

    #[getter]
    fn overload(&self) -> &'static str {
        self.inner.config.overload.name()
    }

    fn __repr__(&self) -> String {
        let c = *self.inner.shared.counts();
        format!(
            "Stream({}/s, max_in_flight={}, {}: scheduled {}, sent {}, dropped {})",
            self.inner.config.rate,
            self.inner.config.max_in_flight,
            self.inner.config.overload.name(),
            c.scheduled,
            c.sent,
            c.dropped
        )
    }
}

/// One answered request of a stream.
#[pyclass(frozen, module = "locust_inference._native", name = "Completion")]
pub struct PyCompletion {
    inner: Completion,
    /// Whether its stream recorded it (once only).
    reported: AtomicBool,
}

#[pymethods]
impl PyCompletion {
    #[getter]
    fn outcome(&self) -> PyOutcome {
        PyOutcome(self.inner.outcome.clone())
    }

    /// Milliseconds from the intended send time to the last response byte (or the failure).
    #[getter]
    fn response_time(&self) -> f64 {
        ms(self.inner.response_time())
    }

    /// Milliseconds from the intended send time to the first content chunk of a streamed answer
    /// (lag + the outcome's ttft), when one arrived.
    #[getter]
    fn ttft(&self) -> Option<f64> {
        self.inner.ttft().map(ms)
    }

    /// Milliseconds from the actual send to the last response byte (or the failure).
    #[getter]
    fn service_time(&self) -> f64 {
        ms(self.inner.outcome.response_time)
    }

    /// Milliseconds between the intended and the actual send time.
    #[getter]
    fn lag(&self) -> f64 {
        ms(self.inner.lag())
    }

    /// Seconds from the stream's start to the intended send time.
    #[getter]
    fn intended(&self) -> f64 {
        self.inner.intended.as_secs_f64()
    }

    /// Seconds from the stream's start to the actual send time.
    #[getter]
    fn sent(&self) -> f64 {
        self.inner.sent.as_secs_f64()
    }

    fn __repr__(&self) -> String {
        format!(
            "Completion(intended {:.6} s, lag {:.3} ms, response {:.3} ms, service {:.3} ms, ok={})",
            self.intended(),
            self.lag(),
            self.response_time(),
            self.service_time(),
            self.inner.outcome.error.is_none()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn response_time_is_lag_plus_service() {
        let outcome = Outcome {
            status: Some(200),
            response_time: Duration::from_millis(20),
            ttfb: Some(Duration::from_millis(19)),
            length: 0,
            top1: None,
            headers: None,
            body: None,
            error: None,
            resent: false,
            input_index: 0,
            tokens: Some(Arc::new(crate::protocol::generative::Tokens {
                streamed: true,
                chunks: 1,
                times: vec![Duration::from_millis(7)],
                ..Default::default()
            })),
        };
        let c = Completion {
            outcome,
            intended: Duration::from_millis(100),
            sent: Duration::from_millis(130),
            stream: 0,
        };
        assert_eq!(c.lag(), Duration::from_millis(30));
        assert_eq!(c.response_time(), Duration::from_millis(50));
        assert_eq!(
            c.ttft(),
            Some(Duration::from_millis(37)),
            "from the intended send"
        );
        let early = Completion {
            sent: Duration::from_millis(90),
            ..c
        };
        assert_eq!(early.lag(), Duration::ZERO, "never negative");
    }
}
