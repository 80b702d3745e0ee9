//! The process's tokio runtime, and [`PerProcess`]: state that belongs to the process that made it.
//!
//! The runtime's threads block the signals meant for the process (Ctrl-C, Locust's SIGTERM), so
//! the kernel delivers them to Python's thread, whose handlers they are for, and never interrupts
//! a send on the I/O thread. A panic in a request is caught ([`catch_panic`]) and becomes that
//! request's failure, so the greenlet waiting for it is answered.
//!
//! Locust's `--processes` forks. A runtime's threads do not survive a fork, and a pooled connection
//! in the child shares its socket and its epoll registration with the parent. So the child lets go
//! of what it inherited without dropping it (dropping would wait for threads that do not exist
//! there, or unregister the parent's sockets) and makes its own on first use.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Once, PoisonError};
use std::task::Poll;

use tokio::runtime::Runtime;

use crate::error::{Error, Result};

/// Bumped in the child of every fork (`pthread_atfork`), so that per-process state can tell it was
/// inherited without a `getpid` system call per request.
static FORK_GENERATION: AtomicU64 = AtomicU64::new(0);

extern "C" fn after_fork_in_child() {
    FORK_GENERATION.fetch_add(1, Ordering::Relaxed);
}

/// Which process this is, as far as inherited state goes: changes in the child of a fork.
fn process_generation() -> u64 {
    static REGISTER: Once = Once::new();
    REGISTER.call_once(|| {
        // SAFETY: registers a handler that only does an atomic add, which is async-signal-safe.
        unsafe { libc::pthread_atfork(None, None, Some(after_fork_in_child)) };
    });
    FORK_GENERATION.load(Ordering::Relaxed)
}

/// A value owned by the process that made it. In the child of a fork the inherited value is
/// forgotten, never dropped, and the slot starts empty.
pub struct PerProcess<T> {
    slot: Mutex<Option<(u64, T)>>,
}

impl<T> PerProcess<T> {
    pub const fn new() -> Self {
        PerProcess {
            slot: Mutex::new(None),
        }
    }

    /// Runs `f` on this process's value (`None` until something puts one there).
    pub fn with<R>(&self, f: impl FnOnce(&mut Option<T>) -> R) -> R {
        let generation = process_generation();
        let mut slot = self.slot.lock().unwrap_or_else(PoisonError::into_inner);
        let mut value = match slot.take() {
            Some((owner, value)) if owner == generation => Some(value),
            Some(inherited) => {
                std::mem::forget(inherited);
                None
            }
            None => None,
        };
        let result = f(&mut value);
        *slot = value.map(|v| (generation, v));
        result
    }

    /// This process's value, made by `make` the first time it is asked for here.
    pub fn get_or_try_init<E>(&self, make: impl FnOnce() -> Result<T, E>) -> Result<T, E>
    where
        T: Clone,
    {
        self.with(|value| {
            if let Some(v) = value {
                return Ok(v.clone());
            }
            let v = make()?;
            *value = Some(v.clone());
            Ok(v)
        })
    }
}

impl<T> Default for PerProcess<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> Drop for PerProcess<T> {
    fn drop(&mut self) {
        let slot = self.slot.get_mut().unwrap_or_else(PoisonError::into_inner);
        if slot
            .as_ref()
            .is_some_and(|(owner, _)| *owner != process_generation())
        {
            std::mem::forget(slot.take());
        }
    }
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

/// Blocks, in the calling thread, every signal but those a fault raises in the thread itself
/// (which cannot be handled elsewhere). A process-directed signal then goes to a thread that takes
/// it: Python's. glibc keeps its own internal signals out of the set.
fn block_process_signals() {
    // SAFETY: fills and edits a local sigset_t, then changes only the calling thread's mask.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&raw mut set);
        for fault in [
            libc::SIGSEGV,
            libc::SIGBUS,
            libc::SIGFPE,
            libc::SIGILL,
            libc::SIGTRAP,
            libc::SIGSYS,
            libc::SIGABRT,
        ] {
            libc::sigdelset(&raw mut set, fault);
        }
        libc::pthread_sigmask(libc::SIG_BLOCK, &raw const set, std::ptr::null_mut());
    }
}

/// Runs `future`, catching a panic in it: `Err` carries the panic's message. The future is not
/// polled again after a panic; what it held is dropped with it.
pub async fn catch_panic<F: Future>(future: F) -> std::result::Result<F::Output, String> {
    let mut future = pin!(future);
    std::future::poll_fn(|cx| {
        match std::panic::catch_unwind(AssertUnwindSafe(|| future.as_mut().poll(cx))) {
            Ok(Poll::Ready(output)) => Poll::Ready(Ok(output)),
            Ok(Poll::Pending) => Poll::Pending,
            Err(payload) => Poll::Ready(Err(panic_message(payload.as_ref()))),
        }
    })
    .await
}

/// The message a panic was raised with.
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(text) = payload.downcast_ref::<&'static str>() {
        (*text).to_string()
    } else if let Some(text) = payload.downcast_ref::<String>() {
        text.clone()
    } else {
        "(no message)".into()
    }
}

static RUNTIME: PerProcess<Arc<Runtime>> = PerProcess::new();

/// This process's runtime, created on first use and re-created after a fork.
pub fn runtime() -> Result<Arc<Runtime>> {
    RUNTIME.get_or_try_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(io_threads())
            .thread_name("locust-inference-io")
            // every thread it starts, workers and blocking ones (name resolution) alike
            .on_thread_start(block_process_signals)
            .enable_io()
            .enable_time()
            .build()
            .map(Arc::new)
            .map_err(|e| Error::Runtime(format!("cannot start the I/O runtime: {e}")))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_is_caught_with_its_message() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let caught = rt.block_on(catch_panic(async {
            tokio::task::yield_now().await; // panics on a later poll, not the first
            panic!("at {}", 42)
        }));
        assert_eq!(caught, Err::<(), _>("at 42".into()));
        assert_eq!(rt.block_on(catch_panic(async { 7 })), Ok(7));
    }

    /// Which signals the thread `tid` of this process blocks (its `SigBlk` mask).
    fn blocked(tid: libc::pid_t) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/self/task/{tid}/status")).unwrap();
        let mask = status
            .lines()
            .find_map(|l| l.strip_prefix("SigBlk:"))
            .unwrap();
        u64::from_str_radix(mask.trim(), 16).unwrap()
    }

    #[test]
    fn the_runtime_s_threads_block_the_process_s_signals() {
        let rt = runtime().unwrap();
        // SAFETY: gettid has no preconditions.
        let worker = rt.block_on(async { tokio::spawn(async { unsafe { libc::gettid() } }).await });
        // SAFETY: as above.
        let resolver = rt.block_on(rt.spawn_blocking(|| unsafe { libc::gettid() }));
        for tid in [worker.unwrap(), resolver.unwrap()] {
            let mask = blocked(tid);
            for signal in [
                libc::SIGINT,
                libc::SIGTERM,
                libc::SIGHUP,
                libc::SIGQUIT,
                libc::SIGUSR1,
                libc::SIGCHLD,
                libc::SIGPIPE,
            ] {
                assert_ne!(
                    mask & 1 << (signal - 1),
                    0,
                    "thread {tid} takes signal {signal}"
                );
            }
            assert_eq!(
                mask & 1 << (libc::SIGSEGV - 1),
                0,
                "a fault must still kill"
            );
        }
    }

    #[test]
    fn a_value_is_made_once_per_process() {
        let cell: PerProcess<u32> = PerProcess::new();
        let mut made = 0;
        let mut get = || {
            cell.get_or_try_init(|| {
                made += 1;
                Ok::<_, ()>(7)
            })
        };
        assert_eq!(get(), Ok(7));
        assert_eq!(get(), Ok(7));
        assert_eq!(made, 1);
    }

    #[test]
    fn an_inherited_value_is_forgotten_not_dropped() {
        struct Loud(Arc<AtomicU64>);
        impl Drop for Loud {
            fn drop(&mut self) {
                self.0.fetch_add(1, Ordering::Relaxed);
            }
        }
        let drops = Arc::new(AtomicU64::new(0));
        let cell = PerProcess::new();
        cell.with(|v| *v = Some(Loud(Arc::clone(&drops))));
        after_fork_in_child(); // as the child of a fork sees it
        assert!(cell.with(|v| v.is_none()), "the child starts empty");
        cell.with(|v| *v = Some(Loud(Arc::clone(&drops))));
        assert_eq!(
            drops.load(Ordering::Relaxed),
            0,
            "the parent's value was dropped"
        );
        drop(cell);
        assert_eq!(
            drops.load(Ordering::Relaxed),
            1,
            "the child's own value is dropped"
        );
    }
}
