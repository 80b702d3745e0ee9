//! `locust_inference._native`: the Rust core of locust-inference. This file only registers the
//! Python module; each concern lives in its own module.

#[cfg(test)]
mod alloc_meter;
pub mod client;
pub mod convert;
pub mod error;
pub mod fit;
pub mod imageset;
pub mod jpeg;
pub mod json_array;
pub mod latency;
pub mod litserve;
pub mod measurements;
pub mod preprocess;
pub mod reason;
pub mod rotation;
pub mod runtime;
pub mod schedule;
pub mod stream;
pub mod tensor;
pub mod timer;
pub mod transport;
pub mod triton;
pub mod wake;

use pyo3::prelude::*;

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    error::register(m)?;
    m.add_function(wrap_pyfunction!(preprocess::preprocess_image_py, m)?)?;
    m.add_function(wrap_pyfunction!(triton::py::encode_triton_request_py, m)?)?;
    m.add_function(wrap_pyfunction!(imageset::preprocess_images_py, m)?)?;
    m.add_function(wrap_pyfunction!(imageset::image_sizes_py, m)?)?;
    m.add_function(wrap_pyfunction!(triton::py::encode_triton_inputs_py, m)?)?;
    m.add_function(wrap_pyfunction!(triton::py::decode_triton_response_py, m)?)?;
    m.add_function(wrap_pyfunction!(triton::py::parse_model_metadata_py, m)?)?;
    m.add_function(wrap_pyfunction!(
        litserve::py::encode_litserve_request_py,
        m
    )?)?;
    m.add_function(wrap_pyfunction!(
        litserve::py::check_litserve_response_py,
        m
    )?)?;
    m.add_function(wrap_pyfunction!(
        litserve::py::encode_litserve_image_request_py,
        m
    )?)?;
    m.add_function(wrap_pyfunction!(
        litserve::py::litserve_template_placeholders_py,
        m
    )?)?;
    m.add_function(wrap_pyfunction!(
        litserve::py::fill_litserve_template_py,
        m
    )?)?;
    m.add_function(wrap_pyfunction!(client::http_request, m)?)?;
    m.add_function(wrap_pyfunction!(wake::thread_crossings, m)?)?;
    m.add_class::<client::PyEndpoint>()?;
    m.add_class::<client::PyRequestSlot>()?;
    m.add_class::<client::PyOutcome>()?;
    m.add_class::<latency::PyLatencyHistogram>()?;
    m.add_class::<measurements::PyMeasurements>()?;
    m.add_class::<stream::PyStream>()?;
    m.add_class::<stream::PyCompletion>()?;
    Ok(())
}
