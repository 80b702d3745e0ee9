//! What a run measures: latency histograms ([`histogram`], HDR) and a user's counters and
//! histograms together with their wire format between workers ([`measurements`]).

pub(crate) mod histogram;
pub(crate) mod measurements;

use pyo3::prelude::*;

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<histogram::PyLatencyHistogram>()?;
    m.add_class::<histogram::PyCountHistogram>()?;
    m.add_class::<measurements::PyMeasurements>()?;
    Ok(())
}
