//! A per-user request slot: runs an [`Endpoint`]'s request on the I/O runtime, walking through
//! its bodies in turn, and signals completion on an eventfd.

use std::sync::{Arc, Mutex, PoisonError};

use pyo3::prelude::*;

use super::endpoint::{Endpoint, Outcome, PyEndpoint, PyOutcome};
use super::rotation::Rotation;
use super::runtime;
use super::wake::{self, Mailbox};
use crate::error::Error;

/// A user's request slot: runs one request at a time on the I/O runtime and makes `fileno()`
/// readable when its outcome is ready.
#[pyclass(frozen, module = "locust_inference._native", name = "RequestSlot")]
pub struct PyRequestSlot {
    mailbox: Arc<Mailbox<Outcome>>,
    /// The endpoint of the last request started: what the slot abandons is counted against it.
    endpoint: Mutex<Option<Arc<Endpoint>>>,
    /// Where this user is in its walk through the endpoint's bodies (made on the first submit;
    /// shared with the task, which takes the next index for a follow-up).
    rotation: Arc<Mutex<Option<Rotation>>>,
    seed: Option<u64>,
}

/// The next body of `rotation` (made for `endpoint` on first use).
/// Counts `n` requests `endpoint` abandoned; none takes no lock (a submit with nothing out, nearly always).
fn count_abandoned(endpoint: &Endpoint, n: usize) {
    if n > 0 {
        endpoint.latency.abandoned(n as u64);
    }
}

fn next_index(rotation: &Mutex<Option<Rotation>>, endpoint: &Endpoint, seed: Option<u64>) -> usize {
    rotation
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .get_or_insert_with(|| endpoint.rotation(seed))
        .next_index()
}

/// A slot's task: runs the request of `generation` with body `index`, delivers its outcome to
/// `mailbox`, and goes on with each follow-up the mailbox asks for.
pub(crate) async fn run_requests(
    endpoint: Arc<Endpoint>,
    mailbox: Arc<Mailbox<Outcome>>,
    rotation: Arc<Mutex<Option<Rotation>>>,
    seed: Option<u64>,
    generation: u64,
    index: usize,
) {
    let (mut generation, mut index) = (generation, index);
    loop {
        let outcome = endpoint.run(index).await;
        let Some(next) = mailbox.complete(generation, outcome) else {
            break;
        };
        generation = next;
        index = next_index(&rotation, &endpoint, seed);
    }
}

#[pymethods]
impl PyRequestSlot {
    /// `seed` orders this user's walk through a shuffling endpoint's bodies.
    #[new]
    #[pyo3(signature = (seed = None))]
    fn new(seed: Option<u64>) -> PyResult<Self> {
        let mailbox =
            Mailbox::new().map_err(|e| Error::Runtime(format!("cannot create an eventfd: {e}")))?;
        Ok(PyRequestSlot {
            mailbox: Arc::new(mailbox),
            endpoint: Mutex::new(None),
            rotation: Arc::new(Mutex::new(None)),
            seed,
        })
    }

    /// The eventfd that becomes readable when an outcome is ready.
    fn fileno(&self) -> i32 {
        self.mailbox.fd().raw()
    }

    /// Starts sending `endpoint`'s request with its next body, or adopts the follow-up the slot
    /// already sent to `endpoint`; any other request still in flight is abandoned. With `follow`,
    /// the I/O thread sends the next request itself the moment this one is answered (a follow-up,
    /// adopted by the next submit), so the caller's turn overlaps that request instead of delaying it.
    #[pyo3(signature = (endpoint, follow = false))]
    fn submit(&self, endpoint: &PyEndpoint, follow: bool) -> PyResult<()> {
        let key = endpoint.inner.id;
        if self.mailbox.adopt(key, follow) {
            return Ok(());
        }
        let rt = runtime::runtime()?;
        let index = next_index(&self.rotation, &endpoint.inner, self.seed);
        let mailbox = Arc::clone(&self.mailbox);
        let rotation = Arc::clone(&self.rotation);
        let endpoint = Arc::clone(&endpoint.inner);
        let previous = self
            .endpoint
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .replace(Arc::clone(&endpoint));
        let seed = self.seed;
        wake::count_hand_off();
        let abandoned = self.mailbox.start(key, follow, |generation| {
            rt.spawn(run_requests(
                endpoint, mailbox, rotation, seed, generation, index,
            ))
            .abort_handle()
        });
        if let Some(previous) = previous {
            count_abandoned(&previous, abandoned);
        }
        Ok(())
    }

    /// The outcome, once `fileno()` is readable; `None` before.
    fn take(&self) -> Option<PyOutcome> {
        self.mailbox.take().map(PyOutcome)
    }

    /// Blocks the calling thread (without the GIL) until the outcome is ready or `timeout` seconds
    /// pass. For plain Python callers; greenlets wait on `fileno()` instead.
    #[pyo3(signature = (timeout = None))]
    fn wait(&self, py: Python<'_>, timeout: Option<f64>) -> Option<PyOutcome> {
        let deadline = timeout.map(|t| {
            // NaN waits not at all, rather than panicking
            std::time::Instant::now()
                + std::time::Duration::try_from_secs_f64(t.clamp(0.0, 1e9)).unwrap_or_default()
        });
        loop {
            let ms = deadline.map_or(-1, |d| {
                let left = d.saturating_duration_since(std::time::Instant::now());
                i32::try_from(left.as_micros().div_ceil(1000)).unwrap_or(i32::MAX)
            });
            py.detach(|| self.mailbox.fd().poll(ms));
            // a wake can be a stale signal whose result was already taken: then wait on
            if let Some(outcome) = self.take() {
                return Some(outcome);
            }
            if deadline.is_some_and(|d| std::time::Instant::now() >= d) {
                return None;
            }
        }
    }

    /// Abandons the request in flight, if any (its connection is closed), and an answer not
    /// taken: nothing is reported, and each is counted as abandoned by its endpoint.
    fn cancel(&self) {
        let abandoned = self.mailbox.cancel();
        if abandoned > 0 {
            if let Some(endpoint) = &*self.endpoint.lock().unwrap_or_else(PoisonError::into_inner) {
                count_abandoned(endpoint, abandoned);
            }
        }
    }

    /// Sends no follow-up: a request out now is the last one unless submit asks again.
    fn unfollow(&self) {
        self.mailbox.unfollow();
    }

    #[getter]
    fn in_flight(&self) -> bool {
        self.mailbox.in_flight()
    }

    /// Whether a follow-up is out or answered that no submit has adopted yet.
    #[getter]
    fn ahead(&self) -> bool {
        self.mailbox.ahead()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::endpoint::tests::{endpoint_with, serve_ok};

    /// Runs the slot's task for one request of `endpoint` on a runtime of its own, as `submit`
    /// does on the I/O runtime, until the task ends; the outcomes wait in the mailbox.
    fn run_slot(
        endpoint: &Arc<Endpoint>,
        mailbox: &Arc<Mailbox<Outcome>>,
        rotation: &Arc<Mutex<Option<Rotation>>>,
        follow: bool,
    ) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let index = next_index(rotation, endpoint, None);
        let (task_endpoint, task_mailbox, task_rotation) = (
            Arc::clone(endpoint),
            Arc::clone(mailbox),
            Arc::clone(rotation),
        );
        let mut handle = None;
        mailbox.start(endpoint.id, follow, |generation| {
            let task = rt.spawn(run_requests(
                task_endpoint,
                task_mailbox,
                task_rotation,
                None,
                generation,
                index,
            ));
            let abort = task.abort_handle();
            handle = Some(task);
            abort
        });
        rt.block_on(handle.unwrap()).unwrap();
    }

    /// Each user walks through all of an endpoint's bodies in turn: the rotation is made on the
    /// first request and kept, so the walk goes on across requests instead of restarting.
    #[test]
    fn a_slot_walks_through_the_bodies_in_turn_across_requests() {
        let endpoint = endpoint_with(1, 3, false); // nothing is sent
        let rotation = Mutex::new(None);
        let walk: Vec<usize> = (0..7)
            .map(|_| next_index(&rotation, &endpoint, None))
            .collect();
        assert_eq!(walk, [0, 1, 2, 0, 1, 2, 0]);
    }

    /// With `--shuffle-inputs`, a user's walk is its seed's permutation: every body once a round.
    #[test]
    fn a_shuffled_slot_walks_its_seeds_order() {
        let endpoint = endpoint_with(1, 16, true);
        let walk = |seed| {
            let rotation = Mutex::new(None);
            (0..32)
                .map(|_| next_index(&rotation, &endpoint, Some(seed)))
                .collect::<Vec<_>>()
        };
        let mut expected = Rotation::new(16, Some(7));
        assert_eq!(
            walk(7),
            (0..32).map(|_| expected.next_index()).collect::<Vec<_>>()
        );
        let mut round: Vec<usize> = walk(7)[..16].to_vec();
        round.sort_unstable();
        assert_eq!(round, (0..16).collect::<Vec<_>>());
        assert_ne!(walk(7), walk(8));
    }

    /// A followed request is answered, then the task sends the next body at once (a follow-up),
    /// and stops there: only the caller re-arms `follow`. The follow-up waits for a submit of the
    /// same endpoint to adopt it; another endpoint's submit does not.
    #[test]
    fn a_followed_request_sends_one_follow_up_for_its_own_endpoint() {
        let port = serve_ok();
        let (endpoint, other) = (endpoint_with(port, 2, false), endpoint_with(port, 2, false));
        assert_ne!(endpoint.id, other.id);
        let mailbox = Arc::new(Mailbox::new().unwrap());
        let rotation = Arc::new(Mutex::new(None));

        run_slot(&endpoint, &mailbox, &rotation, true);
        let first = mailbox.take().unwrap();
        assert_eq!((first.status, first.input_index), (Some(200), 0));
        assert!(first.error.is_none());
        // the follow-up is answered already and waits to be adopted
        assert!(!mailbox.in_flight() && mailbox.ahead());
        assert!(!mailbox.adopt(other.id, false));
        assert!(mailbox.adopt(endpoint.id, false));
        let follow_up = mailbox.take().unwrap();
        assert_eq!((follow_up.status, follow_up.input_index), (Some(200), 1));
        assert!(mailbox.take().is_none());

        // not followed: one request, the walk going on where it was (two bodies: back to 0)
        run_slot(&endpoint, &mailbox, &rotation, false);
        assert_eq!(mailbox.take().map(|o| o.input_index), Some(0));
        assert!(mailbox.take().is_none());
        assert!(!mailbox.in_flight() && !mailbox.ahead());
    }
}
