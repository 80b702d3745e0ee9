//! `locust_inference._native`: the Rust core of locust-inference. This file only registers the
//! areas, each of which adds its own Python classes and functions:
//!
//! - `image`: image files into the tensors a model takes;
//! - `protocol`: tensors and the servers' wire formats;
//! - `transport`: HTTP/1.1 connections (plain, TLS, zero-copy);
//! - `engine`: endpoints, request slots, open-loop streams and the I/O threads;
//! - `measure`: latency histograms and the measurements workers ship;
//! - `error`: the one error enum and its Python exceptions.

#[cfg(test)]
mod alloc_meter;
mod engine;
mod error;
mod image;
mod measure;
mod protocol;
mod transport;

use pyo3::prelude::*;

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    error::register(m)?;
    image::register(m)?;
    protocol::register(m)?;
    engine::register(m)?;
    measure::register(m)?;
    Ok(())
}
