//! Microsecond latency histograms (HdrHistogram: 1 µs to 60 s, 3 significant digits), recorded in
//! Rust for every successful request and merged across Locust workers by serialising them.

use std::time::Duration;

use hdrhistogram::serialization::{Deserializer, Serializer, V2Serializer};
use hdrhistogram::Histogram;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict};

use crate::error::{Error, Result};

pub const LOWEST_US: u64 = 1;
pub const HIGHEST_US: u64 = 60_000_000;
pub const SIGNIFICANT_DIGITS: u8 = 3;

/// The percentiles every summary reports, with their names.
pub const SUMMARY_PERCENTILES: [(&str, f64); 6] = [
    ("p50", 50.0),
    ("p90", 90.0),
    ("p95", 95.0),
    ("p99", 99.0),
    ("p99.9", 99.9),
    ("p99.99", 99.99),
];

pub fn new_histogram() -> Histogram<u64> {
    // The bounds are constants that hdrhistogram accepts.
    Histogram::new_with_bounds(LOWEST_US, HIGHEST_US, SIGNIFICANT_DIGITS)
        .unwrap_or_else(|_| unreachable!())
}

/// A duration in whole µs, clamped to the histograms' lowest value.
pub(crate) fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros())
        .unwrap_or(u64::MAX)
        .max(LOWEST_US)
}

pub fn to_bytes(h: &Histogram<u64>) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    V2Serializer::new()
        .serialize(h, &mut out)
        .map_err(|e| Error::InvalidArgument(format!("cannot serialise histogram: {e:?}")))?;
    Ok(out)
}

/// The V2 encoding's cookie (uncompressed; `to_bytes` never compresses) and header length.
const V2_COOKIE: u32 = 0x1c84_9313;
const V2_HEADER_LEN: usize = 40;
/// How many counts a histogram with our fixed bounds holds (checked against hdrhistogram by a test).
pub(crate) const COUNTS_LEN: usize = 17_408;

/// Decodes what [`to_bytes`] wrote. The bytes come from a worker, so everything is checked before
/// hdrhistogram's `Deserializer` sees them: it allocates the payload length its header claims
/// before reading (4 GiB from a 4-byte field) and a counts array for the bounds the header names,
/// and it trusts the counts (a zero run of `i64::MIN` overflows a negation). Here the header must
/// name our own bounds and the payload length must be the bytes present, so it allocates no more
/// than the input and one histogram of ours; the counts must fit our histogram and their sum a u64.
pub fn from_bytes(bytes: &[u8]) -> Result<Histogram<u64>> {
    let bad = |what: String| Error::protocol(format!("not a serialised latency histogram: {what}"));
    let Some((header, payload)) = bytes.split_first_chunk::<V2_HEADER_LEN>() else {
        return Err(bad(format!(
            "{} bytes, shorter than its {V2_HEADER_LEN}-byte header",
            bytes.len()
        )));
    };
    let word = |at: usize| {
        u32::from_be_bytes([header[at], header[at + 1], header[at + 2], header[at + 3]])
    };
    let long = |at: usize| (u64::from(word(at)) << 32) | u64::from(word(at + 4));
    if word(0) != V2_COOKIE {
        return Err(bad(format!("unknown cookie {:#010x}", word(0))));
    }
    if word(4) as usize != payload.len() {
        return Err(bad(format!(
            "its header claims {} payload bytes, {} are there",
            word(4),
            payload.len()
        )));
    }
    let (offset, digits, low, high, ratio) = (word(8), word(12), long(16), long(24), long(32));
    if (offset, digits, low, high, ratio)
        != (
            0,
            u32::from(SIGNIFICANT_DIGITS),
            LOWEST_US,
            HIGHEST_US,
            1f64.to_bits(),
        )
    {
        return Err(bad(format!(
            "not a histogram of {LOWEST_US} µs to {HIGHEST_US} µs at {SIGNIFICANT_DIGITS} digits \
             (lowest {low}, highest {high}, digits {digits}, offset {offset}, ratio {})",
            f64::from_bits(ratio)
        )));
    }
    let total = check_counts(payload).map_err(|what| bad(what.into()))?;
    let h: Histogram<u64> = Deserializer::new()
        .deserialize(&mut std::io::Cursor::new(bytes))
        .map_err(|e| bad(format!("{e}")))?;
    // The bounds are ours, so `h` is what `new_histogram` makes, with the counts. Its total must
    // be exact: hdrhistogram saturates it, and `check_counts` refused a sum that would.
    if h.len() != total {
        return Err(bad(format!("{} samples counted, {total} encoded", h.len())));
    }
    Ok(h)
}

/// Walks the V2 counts (zig-zag LEB128-64b9B numbers: a count, or minus a run of zero counts) and
/// returns their sum; an error when a number is cut short, the counts go past our histogram's
/// [`COUNTS_LEN`] or their sum past `u64::MAX`.
fn check_counts(mut payload: &[u8]) -> std::result::Result<u64, &'static str> {
    let (mut index, mut total) = (0usize, 0u64);
    while !payload.is_empty() {
        let mut n = 0u64;
        let mut used = 0;
        loop {
            let Some(&b) = payload.get(used) else {
                return Err("a count is cut short");
            };
            if used == 8 {
                n |= u64::from(b) << 56; // the ninth byte is used whole
                used += 1;
                break;
            }
            n |= u64::from(b & 0x7f) << (7 * used);
            used += 1;
            if b & 0x80 == 0 {
                break;
            }
        }
        payload = &payload[used..];
        if n & 1 == 1 {
            // minus a run of zero counts: (n >> 1) + 1 of them
            index = usize::try_from((n >> 1) + 1)
                .ok()
                .and_then(|run| index.checked_add(run))
                .filter(|&i| i <= COUNTS_LEN)
                .ok_or("more counts than the histogram holds")?;
        } else {
            let count = n >> 1;
            if index >= COUNTS_LEN {
                return Err("more counts than the histogram holds");
            }
            total = total.checked_add(count).ok_or("counts sum past 2^64")?;
            index += 1;
        }
    }
    Ok(total)
}

/// `(percentile 0-100, latency µs)` points for an HdrHistogram-style percentile plot.
pub fn distribution(h: &Histogram<u64>, ticks_per_half: u32) -> Vec<(f64, u64)> {
    if h.is_empty() {
        return Vec::new();
    }
    let mut points: Vec<(f64, u64)> = h
        .iter_quantiles(ticks_per_half.max(1))
        .map(|v| {
            (
                v.quantile_iterated_to() * 100.0,
                h.highest_equivalent(v.value_iterated_to()),
            )
        })
        .collect();
    points.insert(0, (0.0, h.min()));
    points
}

/// A latency histogram in microseconds, exposed to Python for merging, summaries and plots.
#[pyclass(module = "locust_inference._native", name = "LatencyHistogram")]
#[derive(Clone)]
pub struct PyLatencyHistogram {
    pub inner: Histogram<u64>,
}

impl PyLatencyHistogram {
    pub fn wrap(inner: Histogram<u64>) -> Self {
        PyLatencyHistogram { inner }
    }
}

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

/// The value at a percentile (0-100), as the highest value its bucket holds; 0 when empty.
fn value_at(h: &Histogram<u64>, percentile: f64) -> u64 {
    if h.is_empty() {
        return 0;
    }
    h.highest_equivalent(h.value_at_percentile(percentile.clamp(0.0, 100.0)))
}

/// Adds every sample of `other` to `into` (merging workers' histograms).
fn merge(into: &mut Histogram<u64>, other: &Histogram<u64>) -> PyResult<()> {
    into.add(other)
        .map_err(|e| Error::InvalidArgument(format!("cannot merge histograms: {e:?}")).into())
}

/// min, mean, the summary percentiles and max, each value divided by `unit` (1000 turns µs into ms);
/// an empty dict when the histogram is empty.
fn summary<'py>(py: Python<'py>, h: &Histogram<u64>, unit: f64) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    if h.is_empty() {
        return Ok(d);
    }
    d.set_item("min", h.min() as f64 / unit)?;
    d.set_item("mean", h.mean() / unit)?;
    for (name, p) in SUMMARY_PERCENTILES {
        d.set_item(name, value_at(h, p) as f64 / unit)?;
    }
    d.set_item("max", h.highest_equivalent(h.max()) as f64 / unit)?;
    Ok(d)
}

#[pymethods]
impl PyLatencyHistogram {
    #[new]
    fn new() -> Self {
        PyLatencyHistogram {
            inner: new_histogram(),
        }
    }

    /// Records one latency in milliseconds (clamped to 1 µs .. 60 s).
    fn record(&mut self, milliseconds: f64) {
        let us = if milliseconds.is_finite() {
            (milliseconds * 1000.0).round().max(0.0) as u64
        } else {
            HIGHEST_US
        };
        self.inner.saturating_record(us.max(LOWEST_US));
    }

    /// Adds every sample of `other` (merging workers' histograms).
    fn add(&mut self, other: &PyLatencyHistogram) -> PyResult<()> {
        merge(&mut self.inner, &other.inner)
    }

    /// The compact HdrHistogram V2 encoding.
    fn to_bytes<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyBytes>> {
        Ok(PyBytes::new(py, &to_bytes(&self.inner)?))
    }

    #[staticmethod]
    fn from_bytes(data: &[u8]) -> PyResult<Self> {
        Ok(PyLatencyHistogram {
            inner: from_bytes(data)?,
        })
    }

    #[getter]
    fn count(&self) -> u64 {
        self.inner.len()
    }

    /// Latency in ms at a percentile (0-100); 0.0 when empty.
    fn percentile(&self, percentile: f64) -> f64 {
        ms(value_at(&self.inner, percentile))
    }

    /// min, mean, p50, p90, p95, p99, p99.9, p99.99, max in ms (empty dict when no samples).
    fn summary<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        summary(py, &self.inner, 1000.0)
    }

    /// `[(percentile, ms), ...]` for a percentile plot.
    #[pyo3(signature = (ticks_per_half = 5))]
    fn distribution(&self, ticks_per_half: u32) -> Vec<(f64, f64)> {
        distribution(&self.inner, ticks_per_half)
            .into_iter()
            .map(|(p, us)| (p, ms(us)))
            .collect()
    }

    fn __eq__(&self, other: &PyLatencyHistogram) -> bool {
        self.inner == other.inner
    }

    fn __repr__(&self) -> String {
        format!(
            "LatencyHistogram(count={}, p50={:.3} ms)",
            self.inner.len(),
            self.percentile(50.0)
        )
    }
}

/// A histogram of counts (tokens per request), exposed to Python: the same HdrHistogram as the
/// latencies (0 to 60,000,000, 3 significant digits: exact up to 2048), values as they are.
#[pyclass(module = "locust_inference._native", name = "CountHistogram")]
#[derive(Clone)]
pub struct PyCountHistogram {
    pub inner: Histogram<u64>,
}

impl PyCountHistogram {
    pub fn wrap(inner: Histogram<u64>) -> Self {
        PyCountHistogram { inner }
    }
}

#[pymethods]
impl PyCountHistogram {
    #[new]
    fn new() -> Self {
        PyCountHistogram {
            inner: new_histogram(),
        }
    }

    /// Records one count (clamped to 60,000,000).
    fn record(&mut self, value: u64) {
        self.inner.saturating_record(value);
    }

    /// Adds every value of `other` (merging workers' histograms).
    fn add(&mut self, other: &PyCountHistogram) -> PyResult<()> {
        merge(&mut self.inner, &other.inner)
    }

    fn to_bytes<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyBytes>> {
        Ok(PyBytes::new(py, &to_bytes(&self.inner)?))
    }

    #[staticmethod]
    fn from_bytes(data: &[u8]) -> PyResult<Self> {
        Ok(PyCountHistogram {
            inner: from_bytes(data)?,
        })
    }

    /// How many values were recorded.
    #[getter]
    fn count(&self) -> u64 {
        self.inner.len()
    }

    /// The sum of the values (each as the histogram holds it: exact up to 2048).
    #[getter]
    fn total(&self) -> u64 {
        self.inner
            .iter_recorded()
            .map(|v| v.value_iterated_to().saturating_mul(v.count_at_value()))
            .fold(0, u64::saturating_add)
    }

    /// The value at a percentile (0-100); 0 when empty.
    fn percentile(&self, percentile: f64) -> u64 {
        value_at(&self.inner, percentile)
    }

    /// min, mean, p50, p90, p95, p99, p99.9, p99.99, max (empty dict when no values).
    fn summary<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        summary(py, &self.inner, 1.0)
    }

    /// `[(percentile, value), ...]` for a percentile plot.
    #[pyo3(signature = (ticks_per_half = 5))]
    fn distribution(&self, ticks_per_half: u32) -> Vec<(f64, u64)> {
        distribution(&self.inner, ticks_per_half)
    }

    fn __eq__(&self, other: &PyCountHistogram) -> bool {
        self.inner == other.inner
    }

    fn __repr__(&self) -> String {
        format!(
            "CountHistogram(count={}, p50={})",
            self.inner.len(),
            self.percentile(50.0)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// What decoding `len` bytes may allocate: one histogram of ours, a copy of the bytes, and
    /// room for an error message.
    fn allowed(len: usize) -> usize {
        let (_, histogram) = crate::alloc_meter::measure(new_histogram);
        histogram + 2 * len + 4096
    }

    fn sample() -> Vec<u8> {
        let mut h = new_histogram();
        for v in [1, 2, 999, 1000, 20_000, 20_001, 59_000_000] {
            h.record_n(v, v % 7 + 1).unwrap();
        }
        to_bytes(&h).unwrap()
    }

    #[test]
    fn counts_len_is_that_of_our_histograms() {
        assert_eq!(new_histogram().distinct_values(), COUNTS_LEN);
    }

    #[test]
    fn a_header_claiming_4_gib_is_refused_without_allocating_them() {
        let mut forged = to_bytes(&new_histogram()).unwrap();
        forged[4..8].copy_from_slice(&u32::MAX.to_be_bytes());
        let (result, used) = crate::alloc_meter::measure(|| from_bytes(&forged));
        let err = result.unwrap_err();
        assert!(
            err.to_string().contains("claims 4294967295 payload bytes"),
            "{err}"
        );
        assert!(used <= allowed(forged.len()), "{used} bytes allocated");
    }

    #[test]
    fn other_bounds_are_refused_without_allocating_their_histogram() {
        // 1 ns .. 2^62 at 5 digits: a 46 MiB counts array in hdrhistogram
        let mut forged = to_bytes(&new_histogram()).unwrap();
        forged[12..16].copy_from_slice(&5u32.to_be_bytes());
        forged[24..32].copy_from_slice(&(1u64 << 62).to_be_bytes());
        let (result, used) = crate::alloc_meter::measure(|| from_bytes(&forged));
        assert!(matches!(result, Err(Error::Protocol(_))));
        assert!(used <= allowed(forged.len()), "{used} bytes allocated");
    }

    #[test]
    fn a_zero_run_of_i64_min_is_refused() {
        // zig-zag u64::MAX is i64::MIN: hdrhistogram negates it to count the zeros
        let mut forged = to_bytes(&new_histogram()).unwrap();
        forged.truncate(V2_HEADER_LEN);
        forged.extend_from_slice(&[0xff; 9]);
        forged[4..8].copy_from_slice(&9u32.to_be_bytes());
        assert!(matches!(from_bytes(&forged), Err(Error::Protocol(_))));
    }

    #[test]
    fn counts_summing_past_u64_are_refused() {
        // zig-zag encoded i64::MAX (9 bytes), twice: fits; three times: the sum does not
        let count = [0xfe, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff];
        let forged = |times: usize| {
            let mut b = to_bytes(&new_histogram()).unwrap();
            b.truncate(V2_HEADER_LEN);
            for _ in 0..times {
                b.extend_from_slice(&count);
            }
            b[4..8].copy_from_slice(&(9 * times as u32).to_be_bytes());
            b
        };
        assert_eq!(from_bytes(&forged(2)).unwrap().len(), 2 * i64::MAX as u64);
        assert!(matches!(from_bytes(&forged(3)), Err(Error::Protocol(_))));
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic_nor_allocate_much(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
            let (_, used) = crate::alloc_meter::measure(|| from_bytes(&bytes));
            prop_assert!(used <= allowed(bytes.len()), "{} bytes allocated", used);
        }

        #[test]
        fn mutated_histograms_never_panic_nor_allocate_much(
            cut in any::<prop::sample::Index>(),
            edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        ) {
            let mut bytes = sample();
            for (at, b) in edits {
                let i = at.index(bytes.len());
                bytes[i] = b;
            }
            bytes.truncate(cut.index(bytes.len() + 1));
            let (_, used) = crate::alloc_meter::measure(|| from_bytes(&bytes));
            prop_assert!(used <= allowed(bytes.len()), "{} bytes allocated", used);
        }

        #[test]
        fn forged_header_words_never_panic_nor_allocate_much(at in 1usize..10, word in any::<u32>(), cut in any::<prop::sample::Index>()) {
            let mut bytes = sample();
            bytes[at * 4..at * 4 + 4].copy_from_slice(&word.to_be_bytes());
            bytes.truncate(V2_HEADER_LEN + cut.index(bytes.len() - V2_HEADER_LEN + 1));
            let (_, used) = crate::alloc_meter::measure(|| from_bytes(&bytes));
            prop_assert!(used <= allowed(bytes.len()), "{} bytes allocated", used);
        }
    }

    #[test]
    fn merge_equals_one_histogram_of_all_samples() {
        let (mut a, mut b, mut all) = (new_histogram(), new_histogram(), new_histogram());
        for i in 0..10_000u64 {
            let v = 1 + (i * 7919) % 250_000;
            if i % 3 == 0 {
                a.record(v).unwrap();
            } else {
                b.record(v).unwrap();
            }
            all.record(v).unwrap();
        }
        let a = from_bytes(&to_bytes(&a).unwrap()).unwrap();
        let b = from_bytes(&to_bytes(&b).unwrap()).unwrap();
        let mut merged = new_histogram();
        merged.add(&a).unwrap();
        merged.add(&b).unwrap();
        assert_eq!(merged, all);
        assert_eq!(merged.value_at_quantile(0.99), all.value_at_quantile(0.99));
    }

    #[test]
    fn garbage_is_a_protocol_error() {
        assert!(matches!(from_bytes(b"nope"), Err(Error::Protocol(_))));
    }

    #[test]
    fn distribution_is_increasing_and_ends_at_100() {
        let mut h = new_histogram();
        for v in 1..=1000u64 {
            h.record(v * 10).unwrap();
        }
        let d = distribution(&h, 5);
        assert!(d.windows(2).all(|w| w[0].0 <= w[1].0 && w[0].1 <= w[1].1));
        assert!((d.last().unwrap().0 - 100.0).abs() < 1e-9);
    }
}
