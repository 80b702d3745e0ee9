//! What goes over the wire: tensors ([`tensor`]), Triton's KServe v2 JSON ([`triton`]), LitServe's
//! JSON ([`litserve`]), the streaming JSON walk both decode with ([`json_array`]) and the short
//! reasons a failure is reported with ([`reason`]). gRPC and SSE will go here.

pub(crate) mod json_array;
pub(crate) mod litserve;
pub(crate) mod reason;
pub(crate) mod tensor;
pub(crate) mod triton;

use pyo3::prelude::*;

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(triton::py::encode_triton_request_py, m)?)?;
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
    Ok(())
}
