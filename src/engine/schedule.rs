//! The pure logic of an open-loop stream: when request `k` is meant to leave (constant spacing or
//! Poisson arrivals from a seed), and what happens to it when `max_in_flight` requests are
//! already out. No clock and no I/O here: `stream` applies these to tokio's timers.

use std::time::Duration;

use crate::error::{Error, Result};

/// How requests are spaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrival {
    /// Exactly `1/rate` apart.
    Constant,
    /// A Poisson process of the given rate: exponential gaps drawn from a seeded generator.
    Poisson { seed: u64 },
}

/// What happens to a request whose intended time comes while `max_in_flight` are out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overload {
    /// It is never sent, and counted as dropped (a camera drops frames).
    Drop,
    /// It waits, in order, and leaves as soon as a request completes (wrk2's model); its latency
    /// still counts from its intended time.
    Queue,
}

impl Overload {
    pub fn parse(text: &str) -> Result<Self> {
        match text {
            "drop" => Ok(Overload::Drop),
            "queue" => Ok(Overload::Queue),
            other => Err(Error::InvalidArgument(format!(
                "overload must be 'drop' or 'queue', not {other:?}"
            ))),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Overload::Drop => "drop",
            Overload::Queue => "queue",
        }
    }
}

/// What to do with a request whose intended time has come.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// A slot is free and nothing waits before it: send now.
    Send,
    /// Never send it.
    Drop,
    /// Put it at the back of the queue.
    Enqueue,
}

/// The decision for a request due now, with `in_flight` of `max_in_flight` out and `queued`
/// requests waiting before it. A request never overtakes one queued before it.
pub fn decide(policy: Overload, in_flight: usize, max_in_flight: usize, queued: usize) -> Decision {
    if in_flight < max_in_flight && queued == 0 {
        Decision::Send
    } else {
        match policy {
            Overload::Drop => Decision::Drop,
            Overload::Queue => Decision::Enqueue,
        }
    }
}

/// SplitMix64: a small, well-mixed generator, enough for arrival times and fully determined by
/// its seed (no dependency, the same sequence on every platform).
#[derive(Debug, Clone)]
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in (0, 1]: never 0, so its logarithm is finite.
    fn next_open01(&mut self) -> f64 {
        ((self.next_u64() >> 11) + 1) as f64 / (1u64 << 53) as f64
    }
}

/// The intended send times of one stream, as offsets from its start: request 0 at zero, then
/// one after another. Offsets are computed from the start, never by adding to the previous send
/// time, so a late send never shifts the ones after it.
#[derive(Debug, Clone)]
pub struct Schedule {
    rate: f64,
    arrival: Arrival,
    rng: SplitMix64,
    /// Index of the next request.
    next: u64,
    /// Poisson: its intended offset in seconds (a running sum of drawn gaps).
    poisson_at: f64,
}

/// Offsets beyond this are clamped (over a century: the stream never gets there).
const MAX_OFFSET_SECS: f64 = 4.0e9;

impl Schedule {
    /// `rate` requests per second, which must be positive and finite.
    pub fn new(rate: f64, arrival: Arrival) -> Result<Self> {
        if !(rate.is_finite() && rate > 0.0) {
            return Err(Error::InvalidArgument(format!(
                "rate must be a positive number of requests per second, got {rate}"
            )));
        }
        let seed = match arrival {
            Arrival::Constant => 0,
            Arrival::Poisson { seed } => seed,
        };
        Ok(Schedule {
            rate,
            arrival,
            rng: SplitMix64(seed),
            next: 0,
            poisson_at: 0.0,
        })
    }

    /// The offset of the next request, and advances past it.
    pub fn next_offset(&mut self) -> Duration {
        let k = self.next;
        self.next += 1;
        let secs = match self.arrival {
            // k / rate from the start: exact spacing, no accumulated rounding
            Arrival::Constant => k as f64 / self.rate,
            Arrival::Poisson { .. } => {
                let at = self.poisson_at;
                self.poisson_at += -self.rng.next_open01().ln() / self.rate;
                at
            }
        };
        Duration::from_secs_f64(secs.clamp(0.0, MAX_OFFSET_SECS))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn offsets(rate: f64, arrival: Arrival, n: usize) -> Vec<Duration> {
        let mut s = Schedule::new(rate, arrival).unwrap();
        (0..n).map(|_| s.next_offset()).collect()
    }

    #[test]
    fn the_first_request_leaves_at_the_start() {
        assert_eq!(offsets(30.0, Arrival::Constant, 1)[0], Duration::ZERO);
        assert_eq!(
            offsets(30.0, Arrival::Poisson { seed: 9 }, 1)[0],
            Duration::ZERO
        );
    }

    #[test]
    fn constant_spacing_is_k_over_rate() {
        let o = offsets(30.0, Arrival::Constant, 3001);
        assert_eq!(o[30], Duration::from_secs(1));
        assert_eq!(o[3000], Duration::from_secs(100));
        assert_eq!(o[1], Duration::from_secs_f64(1.0 / 30.0));
    }

    #[test]
    fn bad_rates_are_refused() {
        for rate in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            assert!(matches!(
                Schedule::new(rate, Arrival::Constant),
                Err(Error::InvalidArgument(_))
            ));
        }
    }

    #[test]
    fn poisson_is_reproducible_from_its_seed() {
        let a = offsets(50.0, Arrival::Poisson { seed: 7 }, 100);
        assert_eq!(a, offsets(50.0, Arrival::Poisson { seed: 7 }, 100));
        assert_ne!(a, offsets(50.0, Arrival::Poisson { seed: 8 }, 100));
    }

    #[test]
    fn poisson_gaps_look_exponential() {
        // 100,000 gaps at 100/s: mean 10 ms (standard error 0.03 ms), and the share of gaps
        // longer than the mean is e^-1 (standard error 0.0015)
        let n = 100_000;
        let o = offsets(100.0, Arrival::Poisson { seed: 42 }, n + 1);
        let gaps: Vec<f64> = o
            .windows(2)
            .map(|w| w[1].as_secs_f64() - w[0].as_secs_f64())
            .collect();
        let mean = gaps.iter().sum::<f64>() / n as f64;
        assert!((mean - 0.01).abs() < 0.01 * 0.02, "mean gap {mean}");
        let long = gaps.iter().filter(|&&g| g > 0.01).count() as f64 / n as f64;
        assert!(
            (long - (-1.0f64).exp()).abs() < 0.01,
            "share above the mean {long}"
        );
    }

    #[test]
    fn decisions() {
        use Decision::{Drop, Enqueue, Send};
        assert_eq!(decide(Overload::Drop, 0, 1, 0), Send);
        assert_eq!(decide(Overload::Drop, 1, 1, 0), Drop);
        assert_eq!(decide(Overload::Queue, 3, 4, 0), Send);
        assert_eq!(decide(Overload::Queue, 4, 4, 0), Enqueue);
        // a free slot does not let a new request overtake queued ones
        assert_eq!(decide(Overload::Queue, 0, 4, 2), Enqueue);
    }

    #[test]
    fn overload_names_round_trip() {
        for p in [Overload::Drop, Overload::Queue] {
            assert_eq!(Overload::parse(p.name()), Ok(p));
        }
        assert!(Overload::parse("block").is_err());
    }

    proptest! {
        #[test]
        fn offsets_are_monotone_and_never_before_start(
            rate in 0.01f64..100_000.0,
            seed in any::<u64>(),
            poisson in any::<bool>(),
        ) {
            let arrival = if poisson { Arrival::Poisson { seed } } else { Arrival::Constant };
            let o = offsets(rate, arrival, 500);
            prop_assert_eq!(o[0], Duration::ZERO);
            prop_assert!(o.windows(2).all(|w| w[0] <= w[1]));
        }

        #[test]
        fn constant_offset_k_is_k_over_rate(rate in 0.01f64..100_000.0, k in 0usize..2000) {
            let o = offsets(rate, Arrival::Constant, k + 1);
            let want = k as f64 / rate;
            // within one nanosecond of the exact value: no drift however far into the stream
            prop_assert!((o[k].as_secs_f64() - want).abs() <= 1e-9 + want * 1e-15);
        }

        #[test]
        fn poisson_count_in_a_window_is_near_rate_times_time(seed in any::<u64>(), rate in 10.0f64..1000.0) {
            // about 2000 arrivals expected: a Poisson count's standard deviation is sqrt(2000) = 45;
            // 6 deviations keep this from failing by chance
            let horizon = 2000.0 / rate;
            let mut s = Schedule::new(rate, Arrival::Poisson { seed }).unwrap();
            let mut count = 0u32;
            while s.next_offset().as_secs_f64() <= horizon {
                count += 1;
            }
            prop_assert!((f64::from(count) - 2000.0).abs() < 6.0 * 2000f64.sqrt(), "{}", count);
        }

        #[test]
        fn drop_never_queues_and_queue_never_drops(
            in_flight in 0usize..10, cap in 1usize..10, queued in 0usize..10, drop in any::<bool>()
        ) {
            let policy = if drop { Overload::Drop } else { Overload::Queue };
            let d = decide(policy, in_flight, cap, queued);
            let free = in_flight < cap && queued == 0;
            prop_assert_eq!(d == Decision::Send, free);
            if !free {
                prop_assert_eq!(d, if drop { Decision::Drop } else { Decision::Enqueue });
            }
        }
    }
}
