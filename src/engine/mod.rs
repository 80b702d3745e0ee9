//! Sending requests: an endpoint and how it runs one request ([`endpoint`]), the slot a Locust
//! user sends through ([`slot`]), the rotation over prepared bodies ([`rotation`]), open-loop
//! arrivals ([`schedule`], [`stream`], [`timer`]), the mailbox that wakes gevent ([`wake`]) and
//! the I/O threads ([`runtime`]); Triton's gRPC calls at start ([`grpc_start`]).

pub(crate) mod endpoint;
pub(crate) mod grpc_start;
pub(crate) mod rotation;
pub(crate) mod runtime;
pub(crate) mod schedule;
pub(crate) mod slot;
pub(crate) mod stream;
pub(crate) mod timer;
pub(crate) mod wake;

use pyo3::prelude::*;

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(endpoint::http_request, m)?)?;
    m.add_function(wrap_pyfunction!(grpc_start::grpc_model_metadata, m)?)?;
    m.add_function(wrap_pyfunction!(grpc_start::grpc_model_ready, m)?)?;
    m.add_function(wrap_pyfunction!(grpc_start::grpc_model_statistics, m)?)?;
    m.add_function(wrap_pyfunction!(grpc_start::grpc_model_config, m)?)?;
    m.add_function(wrap_pyfunction!(wake::thread_crossings, m)?)?;
    m.add_class::<endpoint::PyEndpoint>()?;
    m.add_class::<slot::PyRequestSlot>()?;
    m.add_class::<endpoint::PyOutcome>()?;
    m.add_class::<stream::PyStream>()?;
    m.add_class::<stream::PyCompletion>()?;
    Ok(())
}
