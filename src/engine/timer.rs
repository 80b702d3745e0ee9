//! A one-shot timer precise to microseconds, for the open-loop schedule.
//!
//! tokio's timer wheel has millisecond slots: a sleep ends on the next whole millisecond or later,
//! so requests due every 2 ms would leave up to 1-2 ms late, and that lag would be most of what the
//! schedule reports. A timerfd on CLOCK_MONOTONIC (the clock behind `Instant` on Linux) is armed
//! for the exact deadline and wakes the runtime's epoll like a socket, within the kernel's timer
//! slack (50 µs by default).

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

use tokio::io::unix::AsyncFd;
use tokio::time::Instant;

pub struct Timer {
    fd: AsyncFd<OwnedFd>,
}

impl Timer {
    /// A disarmed timer; must be called inside the runtime that will wait on it.
    pub fn new() -> io::Result<Self> {
        // SAFETY: timerfd_create has no memory-safety preconditions; the result is checked.
        let fd = unsafe {
            libc::timerfd_create(
                libc::CLOCK_MONOTONIC,
                libc::TFD_NONBLOCK | libc::TFD_CLOEXEC,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd is a fresh descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: an OwnedFd returns the same open descriptor for as long as it lives, and the
        // AsyncFd owns it.
        let fd = unsafe { AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE)? };
        Ok(Timer { fd })
    }

    /// Sets the timer to expire at `deadline` (at once when it has passed), replacing any earlier
    /// deadline.
    pub fn arm(&self, deadline: Instant) -> io::Result<()> {
        // A zero it_value would disarm the timer: a deadline already passed gets 1 ns instead.
        let wait = deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_nanos(1));
        let spec = libc::itimerspec {
            it_interval: libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            },
            it_value: libc::timespec {
                tv_sec: libc::time_t::try_from(wait.as_secs()).unwrap_or(libc::time_t::MAX),
                tv_nsec: libc::c_long::from(wait.subsec_nanos()),
            },
        };
        // SAFETY: a valid itimerspec for a timerfd we own; the old value is not asked for.
        let rc = unsafe {
            libc::timerfd_settime(
                self.fd.as_raw_fd(),
                0,
                &raw const spec,
                std::ptr::null_mut(),
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Waits until the armed deadline passes. Cancel-safe: dropped before it returns, the expiry
    /// stays pending for the next call.
    pub async fn expired(&self) -> io::Result<()> {
        loop {
            let mut ready = self.fd.readable().await?;
            let read = ready.try_io(|fd| {
                let mut expirations: u64 = 0;
                // SAFETY: reads at most 8 bytes into a live u64.
                let n = unsafe {
                    libc::read(
                        fd.as_raw_fd(),
                        std::ptr::from_mut(&mut expirations).cast(),
                        8,
                    )
                };
                if n < 0 {
                    Err(io::Error::last_os_error())
                } else {
                    Ok(())
                }
            });
            match read {
                Ok(result) => return result,
                Err(_would_block) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    #[test]
    fn never_fires_before_its_deadline() {
        runtime().block_on(async {
            let timer = Timer::new().unwrap();
            for micros in [50, 700, 1_500, 3_000] {
                let deadline = Instant::now() + Duration::from_micros(micros);
                timer.arm(deadline).unwrap();
                timer.expired().await.unwrap();
                assert!(Instant::now() >= deadline, "{micros} µs");
            }
        });
    }

    #[test]
    fn a_passed_deadline_fires_at_once_and_rearming_replaces_it() {
        runtime().block_on(async {
            let timer = Timer::new().unwrap();
            timer.arm(Instant::now()).unwrap();
            timer.expired().await.unwrap();
            // armed for an hour, then re-armed for now: the hour is forgotten
            timer
                .arm(Instant::now() + Duration::from_secs(3600))
                .unwrap();
            timer.arm(Instant::now()).unwrap();
            tokio::time::timeout(Duration::from_secs(60), timer.expired())
                .await
                .expect("the re-armed deadline fires")
                .unwrap();
        });
    }

    #[test]
    fn a_wait_given_up_does_not_spoil_the_next() {
        runtime().block_on(async {
            let timer = Timer::new().unwrap();
            timer
                .arm(Instant::now() + Duration::from_secs(3600))
                .unwrap();
            let given_up = tokio::time::timeout(Duration::from_millis(1), timer.expired()).await;
            assert!(given_up.is_err(), "an hour has not passed");
            timer.arm(Instant::now()).unwrap();
            tokio::time::timeout(Duration::from_secs(60), timer.expired())
                .await
                .expect("the next deadline fires")
                .unwrap();
        });
    }
}
