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

pub fn from_bytes(bytes: &[u8]) -> Result<Histogram<u64>> {
    let h: Histogram<u64> = Deserializer::new()
        .deserialize(&mut std::io::Cursor::new(bytes))
        .map_err(|e| Error::protocol(format!("not a serialised latency histogram: {e:?}")))?;
    let mut fixed = new_histogram();
    fixed
        .add(&h)
        .map_err(|e| Error::protocol(format!("histogram out of range: {e:?}")))?;
    Ok(fixed)
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
        self.inner
            .add(&other.inner)
            .map_err(|e| Error::InvalidArgument(format!("cannot merge histograms: {e:?}")).into())
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
        if self.inner.is_empty() {
            return 0.0;
        }
        ms(self
            .inner
            .highest_equivalent(self.inner.value_at_percentile(percentile.clamp(0.0, 100.0))))
    }

    /// min, mean, p50, p90, p95, p99, p99.9, p99.99, max in ms (empty dict when no samples).
    fn summary<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        if self.inner.is_empty() {
            return Ok(d);
        }
        d.set_item("min", ms(self.inner.min()))?;
        d.set_item("mean", self.inner.mean() / 1000.0)?;
        for (name, p) in SUMMARY_PERCENTILES {
            d.set_item(name, self.percentile(p))?;
        }
        d.set_item("max", ms(self.inner.highest_equivalent(self.inner.max())))?;
        Ok(d)
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

#[cfg(test)]
mod tests {
    use super::*;

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
