//! The bridge between tokio and gevent: a one-request mailbox whose arrival is signalled on an
//! eventfd, which gevent's hub watches like any socket.
//!
//! Why an eventfd: the I/O thread writes 8 bytes and never touches the GIL, so completing a request
//! costs one syscall and scales with the number of users; the greenlet waits in the hub like any
//! socket read. gevent's threadpool would block one of only 10 threads per in-flight request, and
//! waking Python from the I/O thread would need the GIL on every completion.

use std::collections::VecDeque;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

use pyo3::prelude::*;

use tokio::task::AbortHandle;

/// Work handed from Python's thread to the I/O runtime, and signals from the I/O runtime to Python's
/// thread, since the process started: what a request costs in crossings between the two threads.
static TO_IO: AtomicU64 = AtomicU64::new(0);
static TO_PYTHON: AtomicU64 = AtomicU64::new(0);

/// Counts one hand-off of work from Python's thread to the I/O runtime.
pub fn count_hand_off() {
    TO_IO.fetch_add(1, Ordering::Relaxed);
}

/// `thread_crossings() -> tuple[int, int]`: hand-offs to the I/O runtime and signals back to
/// Python (eventfd writes) so far in this process.
#[pyfunction]
pub fn thread_crossings() -> (u64, u64) {
    (
        TO_IO.load(Ordering::Relaxed),
        TO_PYTHON.load(Ordering::Relaxed),
    )
}

/// A non-blocking Linux eventfd.
#[derive(Debug)]
pub struct EventFd(OwnedFd);

impl EventFd {
    pub fn new() -> std::io::Result<Self> {
        // SAFETY: eventfd has no memory-safety preconditions; the result is checked.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: fd is a fresh descriptor that nothing else owns.
        Ok(EventFd(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    /// Makes the descriptor readable.
    pub fn signal(&self) {
        TO_PYTHON.fetch_add(1, Ordering::Relaxed);
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a live u64 to a descriptor we own. It cannot block
        // (non-blocking) and can only fail when the counter would overflow, which it never nears.
        unsafe { libc::write(self.0.as_raw_fd(), std::ptr::from_ref(&one).cast(), 8) };
    }

    /// Makes the descriptor unreadable again.
    pub fn drain(&self) {
        let mut value: u64 = 0;
        // SAFETY: reads at most 8 bytes into a live u64; EAGAIN (nothing pending) is fine.
        unsafe { libc::read(self.0.as_raw_fd(), std::ptr::from_mut(&mut value).cast(), 8) };
    }

    pub fn raw(&self) -> RawFd {
        self.0.as_raw_fd()
    }

    /// Blocks the calling thread until readable or the timeout (ms, negative: forever) passes.
    pub fn poll(&self, timeout_ms: i32) -> bool {
        let mut pfd = libc::pollfd {
            fd: self.raw(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        let n = unsafe { libc::poll(&raw mut pfd, 1, timeout_ms) };
        n > 0
    }
}

struct State<T> {
    generation: u64,
    /// Results delivered and not yet taken, oldest first: at most two (an answer Python has not
    /// taken yet, and that of the request the slot sent on its own when the answer arrived).
    results: VecDeque<T>,
    /// The task running this slot's requests, while one runs.
    task: Option<AbortHandle>,
    /// What the requests of this generation were started for (an endpoint's id).
    key: usize,
    /// Whether the task starts the next request itself as soon as this one is answered.
    follow: bool,
    /// Whether the request of `generation` was started by the task (a follow-up) and no caller
    /// has adopted it yet.
    ahead: bool,
}

/// Holds at most one request in flight and its result. Starting a new request or cancelling
/// aborts the previous one; a late completion of an old generation is discarded.
///
/// A request begun with `follow` is followed: the moment it is answered, the task that ran it
/// starts the next one (a new generation), without waiting for the caller to take the answer
/// and ask again. The caller's next request then [`adopt`](Mailbox::adopt)s that follow-up. Only
/// the caller re-arms `follow`, so the task runs at most one request ahead of the caller.
pub struct Mailbox<T> {
    fd: EventFd,
    state: Mutex<State<T>>,
}

impl<T> Mailbox<T> {
    pub fn new() -> std::io::Result<Self> {
        Ok(Mailbox {
            fd: EventFd::new()?,
            state: Mutex::new(State {
                generation: 0,
                results: VecDeque::new(),
                task: None,
                key: 0,
                follow: false,
                ahead: false,
            }),
        })
    }

    pub fn fd(&self) -> &EventFd {
        &self.fd
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State<T>> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Forgets any previous request and starts the next, for `key` and followed by another as
    /// soon as it is answered when `follow`: `spawn` gets its generation and returns the task's
    /// abort handle. All under the lock, so the task cannot deliver (and move on to a follow-up's
    /// generation) before its handle is kept. Returns how many requests of the previous key it
    /// abandoned (see [`Mailbox::cancel`]).
    pub fn start(&self, key: usize, follow: bool, spawn: impl FnOnce(u64) -> AbortHandle) -> usize {
        let mut state = self.lock();
        let abandoned = self.abandon(&mut state);
        state.key = key;
        state.follow = follow;
        state.task = Some(spawn(state.generation));
        abandoned
    }

    /// Takes over the follow-up the task started for `key`, if one is out (or answered) and no
    /// earlier answer waits untaken, and sets whether it is followed in turn. False: the caller
    /// begins a request of its own.
    pub fn adopt(&self, key: usize, follow: bool) -> bool {
        let mut state = self.lock();
        // its answer, once in, must be the only one waiting: an earlier one is the caller's to take
        let answered = usize::from(state.task.is_none());
        if !state.ahead || state.key != key || state.results.len() != answered {
            return false;
        }
        state.ahead = false;
        state.follow = follow && state.task.is_some();
        true
    }

    /// Whether a follow-up is out or answered that no caller has adopted yet.
    pub fn ahead(&self) -> bool {
        self.lock().ahead
    }

    /// Stops following: a request out now is not followed by another.
    pub fn unfollow(&self) {
        self.lock().follow = false;
    }

    /// Delivers the result of `generation` (called from the I/O thread) and wakes the waiter.
    /// Returns the generation of the follow-up the caller's task is to start now, if this request
    /// was followed.
    pub fn complete(&self, generation: u64, result: T) -> Option<u64> {
        let next = {
            let mut state = self.lock();
            if state.generation != generation {
                return None;
            }
            state.results.push_back(result);
            if state.follow {
                state.follow = false;
                state.ahead = true;
                state.generation += 1;
                Some(state.generation)
            } else {
                state.task = None;
                None
            }
        };
        // After the lock is released: signalled under it, the woken waiter (on a shared core, often
        // scheduled at once) would find the lock still held and block on it. So the eventfd can be
        // readable with no result (a signal that arrived after its result was taken): `take` drains it.
        self.fd.signal();
        next
    }

    /// Takes the oldest delivered result, if any; the eventfd stays readable while another waits
    /// and is drained (also of a stale signal) once none does.
    pub fn take(&self) -> Option<T> {
        let mut state = self.lock();
        let result = state.results.pop_front();
        if state.results.is_empty() {
            self.fd.drain();
        }
        result
    }

    /// Drops results nobody took, and their signal (no syscall when there is none).
    fn clear(&self, state: &mut State<T>) {
        state.follow = false;
        state.ahead = false;
        if !state.results.is_empty() {
            state.results.clear();
            self.fd.drain();
        }
    }

    /// Aborts the request in flight, if any, and drops the answers nobody took. Returns how many
    /// requests that abandoned: sent (the server may have run them) and never to be taken.
    pub fn cancel(&self) -> usize {
        self.abandon(&mut self.lock())
    }

    fn abandon(&self, state: &mut State<T>) -> usize {
        state.generation += 1;
        let abandoned = state.results.len() + usize::from(state.task.is_some());
        if let Some(task) = state.task.take() {
            task.abort();
        }
        self.clear(state);
        abandoned
    }

    /// Whether a request is out and unanswered (a follow-up included).
    pub fn in_flight(&self) -> bool {
        self.lock().task.is_some()
    }
}

/// A queue of results from the I/O thread, signalled on an eventfd: readable whenever at least
/// one result waits (and, briefly, after a late signal whose results were already taken), so a
/// greenlet takes several at once with one wake-up. Once closed, pushes are discarded.
pub struct Inbox<T> {
    fd: EventFd,
    state: Mutex<InboxState<T>>,
}

struct InboxState<T> {
    items: VecDeque<T>,
    closed: bool,
}

impl<T> Inbox<T> {
    pub fn new() -> std::io::Result<Self> {
        Ok(Inbox {
            fd: EventFd::new()?,
            state: Mutex::new(InboxState {
                items: VecDeque::new(),
                closed: false,
            }),
        })
    }

    pub fn fd(&self) -> &EventFd {
        &self.fd
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, InboxState<T>> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Adds a result (called from the I/O thread); false when the inbox is closed.
    pub fn push(&self, item: T) -> bool {
        let first = {
            let mut state = self.lock();
            if state.closed {
                return false;
            }
            state.items.push_back(item);
            state.items.len() == 1
        };
        if first {
            // after the lock is released, as in `Mailbox::complete`; a push that finds items
            // waiting needs no signal of its own: theirs is on its way
            self.fd.signal();
        }
        true
    }

    /// Takes every waiting result, oldest first, and drains the eventfd (also of a stale signal
    /// whose results an earlier call took).
    pub fn take_all(&self) -> Vec<T> {
        let mut state = self.lock();
        self.fd.drain();
        state.items.drain(..).collect()
    }

    /// Refuses further results and returns how many waited untaken (they are dropped).
    pub fn close(&self) -> usize {
        let mut state = self.lock();
        state.closed = true;
        let untaken = state.items.len();
        if untaken > 0 {
            state.items.clear();
            self.fd.drain();
        }
        untaken
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: usize = 0x1000;

    /// Begins a request whose task never ends by itself (as an I/O-thread task waiting on a server).
    fn start_running<T>(m: &Mailbox<T>, rt: &tokio::runtime::Runtime, follow: bool) -> u64 {
        let mut generation = 0;
        m.start(KEY, follow, |g| {
            generation = g;
            rt.spawn(std::future::pending::<()>()).abort_handle()
        });
        generation
    }

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
    }

    #[test]
    fn eventfd_signals_and_drains() {
        let fd = EventFd::new().unwrap();
        assert!(!fd.poll(0));
        fd.signal();
        fd.signal();
        assert!(fd.poll(0));
        fd.drain();
        assert!(!fd.poll(0));
    }

    #[test]
    fn stale_generations_are_dropped() {
        let rt = runtime();
        let m: Mailbox<u32> = Mailbox::new().unwrap();
        let g1 = start_running(&m, &rt, false);
        let g2 = start_running(&m, &rt, false);
        m.complete(g1, 1);
        assert!(!m.fd().poll(0));
        assert_eq!(m.take(), None);
        m.complete(g2, 2);
        assert!(m.fd().poll(0));
        assert_eq!(m.take(), Some(2));
        assert!(!m.fd().poll(0));
        let g3 = start_running(&m, &rt, false);
        m.cancel();
        m.complete(g3, 3);
        assert_eq!(m.take(), None);
        // a result never taken: the next request (or a cancel) leaves the eventfd unreadable
        let g4 = start_running(&m, &rt, false);
        m.complete(g4, 4);
        assert!(m.fd().poll(0));
        let g5 = start_running(&m, &rt, false);
        assert!(!m.fd().poll(0));
        m.complete(g5, 5);
        m.cancel();
        assert!(!m.fd().poll(0));
        assert_eq!(m.take(), None);
    }

    #[test]
    fn a_followed_request_hands_over_a_new_generation_once() {
        let rt = runtime();
        let m: Mailbox<u32> = Mailbox::new().unwrap();
        let g1 = start_running(&m, &rt, true);
        let g2 = m.complete(g1, 1).expect("followed");
        assert_eq!(g2, g1 + 1);
        assert!(m.ahead());
        // the follow-up is not followed until adopted: its answer ends the chain
        assert_eq!(m.take(), Some(1));
        assert!(!m.fd().poll(0));
        assert!(
            !m.adopt(KEY + 1, true),
            "another endpoint's request is not adopted"
        );
        assert!(m.adopt(KEY, true));
        assert!(!m.ahead() && !m.adopt(KEY, true), "adopted once");
        let g3 = m.complete(g2, 2).expect("re-armed by adopt");
        assert_eq!(m.take(), Some(2));
        assert!(m.adopt(KEY, true));
        m.unfollow();
        assert_eq!(m.complete(g3, 3), None, "unfollowed before its answer");
        assert_eq!(m.take(), Some(3));
        assert!(!m.ahead() && !m.adopt(KEY, true));
    }

    #[test]
    fn two_answers_wait_in_order_and_keep_the_eventfd_readable_between() {
        let rt = runtime();
        let m: Mailbox<u32> = Mailbox::new().unwrap();
        let g1 = start_running(&m, &rt, true);
        let g2 = m.complete(g1, 1).unwrap();
        assert_eq!(
            m.complete(g2, 2),
            None,
            "the follow-up was never adopted, so not followed"
        );
        // the first answer is untaken: adopting now would hand the caller the wrong one
        assert!(!m.adopt(KEY, true));
        assert_eq!(m.take(), Some(1));
        assert!(m.fd().poll(0), "the second answer still waits");
        assert!(m.adopt(KEY, true), "its answer is the only one waiting");
        assert_eq!(m.take(), Some(2));
        assert!(!m.fd().poll(0));
        assert!(!m.in_flight());
    }

    #[test]
    fn a_new_request_and_cancel_drop_a_follow_up_and_its_answer() {
        let rt = runtime();
        let m: Mailbox<u32> = Mailbox::new().unwrap();
        let g1 = start_running(&m, &rt, true);
        let g2 = m.complete(g1, 1).unwrap();
        let g3 = start_running(&m, &rt, false);
        assert!(!m.ahead());
        assert_eq!(m.complete(g2, 2), None, "stale");
        assert_eq!(m.take(), None);
        let g4 = m.complete(g3, 3);
        assert_eq!(g4, None);
        assert_eq!(m.take(), Some(3));
        let g5 = start_running(&m, &rt, true);
        let _ = m.complete(g5, 5).unwrap();
        assert_eq!(
            m.cancel(),
            2,
            "the answer nobody took, and its follow-up out"
        );
        assert!(!m.ahead() && !m.fd().poll(0) && m.take().is_none());
    }

    #[test]
    fn what_a_cancel_or_a_new_request_abandons_is_counted() {
        let rt = runtime();
        let m: Mailbox<u32> = Mailbox::new().unwrap();
        assert_eq!(m.cancel(), 0, "nothing out");
        let g1 = start_running(&m, &rt, false);
        assert_eq!(m.cancel(), 1, "one out");
        assert_eq!(m.cancel(), 0, "already abandoned");
        let g2 = start_running(&m, &rt, false);
        assert_eq!(m.complete(g1, 1), None, "stale: not counted again");
        m.complete(g2, 2);
        assert_eq!(m.take(), Some(2));
        assert_eq!(m.cancel(), 0, "answered and taken");
        let g3 = start_running(&m, &rt, false);
        m.complete(g3, 3);
        assert_eq!(m.cancel(), 1, "answered, never taken");
        start_running(&m, &rt, false);
        let pending = |_| rt.spawn(std::future::pending::<()>()).abort_handle();
        assert_eq!(
            m.start(KEY + 1, false, pending),
            1,
            "a new request replaced one out"
        );
        assert_eq!(m.cancel(), 1);
    }

    #[test]
    fn a_request_answered_before_start_returns_is_still_followed() {
        let rt = runtime();
        let m = std::sync::Arc::new(Mailbox::<u32>::new().unwrap());
        let mut answering = None;
        m.start(KEY, true, |g| {
            // the I/O thread answers at once, while the caller has not yet kept the task's handle
            let m2 = std::sync::Arc::clone(&m);
            answering = Some(std::thread::spawn(move || m2.complete(g, 1)));
            std::thread::sleep(std::time::Duration::from_millis(50));
            rt.spawn(std::future::pending::<()>()).abort_handle()
        });
        let next = answering.unwrap().join().unwrap();
        assert!(next.is_some(), "followed");
        assert!(
            m.in_flight() && m.ahead(),
            "the follow-up runs on the kept task"
        );
        assert_eq!(m.take(), Some(1));
    }

    #[test]
    fn completes_from_another_thread() {
        let rt = runtime();
        let m = std::sync::Arc::new(Mailbox::<&'static str>::new().unwrap());
        let g = start_running(&m, &rt, false);
        let m2 = std::sync::Arc::clone(&m);
        let t = std::thread::spawn(move || m2.complete(g, "done"));
        assert!(m.fd().poll(10_000));
        t.join().unwrap();
        assert_eq!(m.take(), Some("done"));
    }

    #[test]
    fn inbox_is_readable_exactly_while_items_wait() {
        let inbox: Inbox<u32> = Inbox::new().unwrap();
        assert!(!inbox.fd().poll(0));
        assert!(inbox.take_all().is_empty());
        assert!(inbox.push(1) && inbox.push(2));
        assert!(inbox.fd().poll(0));
        assert_eq!(inbox.take_all(), vec![1, 2]);
        assert!(!inbox.fd().poll(0));
        inbox.push(3);
        assert_eq!(inbox.close(), 1);
        assert!(!inbox.fd().poll(0));
        assert!(!inbox.push(4), "closed: refused");
        assert!(inbox.take_all().is_empty());
    }
}
