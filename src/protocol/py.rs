//! The protocol area's Python functions: the codecs as Python calls them (tests, set-up work).

use pyo3::prelude::*;

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(triton::encode_triton_request_py, m)?)?;
    m.add_function(wrap_pyfunction!(triton::encode_triton_inputs_py, m)?)?;
    m.add_function(wrap_pyfunction!(triton::decode_triton_response_py, m)?)?;
    m.add_function(wrap_pyfunction!(triton::parse_model_metadata_py, m)?)?;
    m.add_function(wrap_pyfunction!(triton::encode_triton_grpc_inputs_py, m)?)?;
    m.add_function(wrap_pyfunction!(triton::encode_triton_grpc_generate_py, m)?)?;
    m.add_function(wrap_pyfunction!(triton::decode_triton_grpc_response_py, m)?)?;
    m.add_function(wrap_pyfunction!(litserve::encode_litserve_request_py, m)?)?;
    m.add_function(wrap_pyfunction!(litserve::check_litserve_response_py, m)?)?;
    m.add_function(wrap_pyfunction!(
        litserve::encode_litserve_image_request_py,
        m
    )?)?;
    m.add_function(wrap_pyfunction!(
        litserve::litserve_template_placeholders_py,
        m
    )?)?;
    m.add_function(wrap_pyfunction!(litserve::fill_litserve_template_py, m)?)?;
    m.add_function(wrap_pyfunction!(generative::count_tokens_py, m)?)?;
    Ok(())
}

/// The `--tokenizer`'s counts, for the synthetic prompts made at start (`--input-tokens`).
mod generative {
    use std::path::PathBuf;

    use pyo3::prelude::*;

    use crate::protocol::generative::Counter;

    /// `count_tokens(tokenizer, texts)`: each text's token count by the tokenizer file (no special
    /// tokens added), the same count the endpoint makes of a prompt; None where it fails on one.
    #[pyfunction(name = "count_tokens")]
    pub fn count_tokens_py(
        py: Python<'_>,
        tokenizer: PathBuf,
        texts: Vec<String>,
    ) -> PyResult<Vec<Option<u64>>> {
        py.detach(|| {
            let counter = Counter::load(&tokenizer)?;
            Ok(texts.iter().map(|t| counter.count(t)).collect())
        })
    }
}

/// Conversions between [`Tensor`](crate::protocol::tensor::Tensor) and numpy arrays, at the Python
/// boundary only.
mod tensor {
    use pyo3::prelude::*;
    use pyo3::types::PyBytes;

    use crate::error::Error;
    use crate::protocol::tensor::{DataType, Tensor};

    /// numpy's little-endian dtype string for a datatype.
    fn numpy_dtype(datatype: DataType) -> &'static str {
        match datatype {
            DataType::Bool => "|b1",
            DataType::Uint8 => "|u1",
            DataType::Int8 => "|i1",
            DataType::Uint16 => "<u2",
            DataType::Int16 => "<i2",
            DataType::Fp16 => "<f2",
            DataType::Uint32 => "<u4",
            DataType::Int32 => "<i4",
            DataType::Fp32 => "<f4",
            DataType::Uint64 => "<u8",
            DataType::Int64 => "<i8",
            DataType::Fp64 => "<f8",
        }
    }

    fn from_numpy_name(name: &str) -> Option<DataType> {
        Some(match name {
            "bool" => DataType::Bool,
            "uint8" => DataType::Uint8,
            "int8" => DataType::Int8,
            "uint16" => DataType::Uint16,
            "int16" => DataType::Int16,
            "float16" => DataType::Fp16,
            "uint32" => DataType::Uint32,
            "int32" => DataType::Int32,
            "float32" => DataType::Fp32,
            "uint64" => DataType::Uint64,
            "int64" => DataType::Int64,
            "float64" => DataType::Fp64,
            _ => return None,
        })
    }

    /// Copies a numpy array (any layout or byte order) into a wire tensor.
    pub fn tensor_from_numpy(array: &Bound<'_, PyAny>, name: &str) -> PyResult<Tensor> {
        let py = array.py();
        let numpy = py.import("numpy")?;
        let array = numpy.call_method1("asarray", (array,))?;
        let dtype_name: String = array.getattr("dtype")?.getattr("name")?.extract()?;
        let datatype = from_numpy_name(&dtype_name).ok_or_else(|| {
            Error::UnsupportedType(format!(
                "numpy dtype {dtype_name} has no KServe v2 datatype"
            ))
        })?;
        let shape: Vec<usize> = array.getattr("shape")?.extract()?;
        let contiguous = numpy.call_method1("ascontiguousarray", (array, numpy_dtype(datatype)))?;
        let data: Vec<u8> = contiguous.call_method0("tobytes")?.extract()?;
        Ok(Tensor {
            name: name.to_string(),
            datatype,
            shape,
            data,
        })
    }

    /// A new, writable numpy array holding the tensor.
    pub fn tensor_to_numpy<'py>(py: Python<'py>, tensor: &Tensor) -> PyResult<Bound<'py, PyAny>> {
        let numpy = py.import("numpy")?;
        let bytes = PyBytes::new(py, &tensor.data);
        let flat = numpy.call_method1("frombuffer", (bytes, numpy_dtype(tensor.datatype)))?;
        flat.call_method1("reshape", (tensor.shape.clone(),))?
            .call_method0("copy")
    }
}

/// Triton's codec.
pub(crate) mod triton {
    use pyo3::prelude::*;
    use pyo3::types::{PyBytes, PyDict, PyList};

    use super::tensor::{tensor_from_numpy, tensor_to_numpy};

    /// `encode_triton_request(tensor, input_name, output_names, *, binary=True)`
    #[pyfunction(name = "encode_triton_request")]
    #[pyo3(signature = (tensor, input_name, output_names, *, binary = true))]
    pub fn encode_triton_request_py<'py>(
        py: Python<'py>,
        tensor: &Bound<'py, PyAny>,
        input_name: &str,
        output_names: Vec<String>,
        binary: bool,
    ) -> PyResult<(Bound<'py, PyBytes>, Option<usize>)> {
        let input = tensor_from_numpy(tensor, input_name)?;
        let (body, header_len) =
            py.detach(|| crate::protocol::triton::encode_request(&input, &output_names, binary))?;
        Ok((PyBytes::new(py, &body), header_len))
    }

    /// `encode_triton_inputs(inputs, output_names, *, binary=True)`: `inputs` are
    /// `(name, datatype, shape, data)` with `data` the little-endian element bytes.
    #[pyfunction(name = "encode_triton_inputs")]
    #[pyo3(signature = (inputs, output_names, *, binary = true))]
    pub fn encode_triton_inputs_py(
        py: Python<'_>,
        inputs: Vec<(String, String, Vec<usize>, Vec<u8>)>,
        output_names: Vec<String>,
        binary: bool,
    ) -> PyResult<(Bound<'_, PyBytes>, Option<usize>)> {
        let tensors = inputs
            .into_iter()
            .map(|(name, datatype, shape, data)| {
                let datatype =
                    crate::protocol::tensor::DataType::parse(&datatype).map_err(|_| {
                        crate::error::Error::InvalidArgument(format!(
                            "input {name:?}: unsupported datatype {datatype:?}"
                        ))
                    })?;
                Ok(crate::protocol::tensor::Tensor {
                    name,
                    datatype,
                    shape,
                    data,
                })
            })
            .collect::<crate::error::Result<Vec<_>>>()?;
        let (body, header_len) =
            py.detach(|| crate::protocol::triton::encode_inputs(&tensors, &output_names, binary))?;
        Ok((PyBytes::new(py, &body), header_len))
    }

    /// `encode_triton_grpc_inputs(model, inputs, output_names, *, version="", stream=False)`: a
    /// gRPC `ModelInferRequest`, `inputs` as for `encode_triton_inputs`, sent as raw contents; with
    /// `stream`, for `ModelStreamInfer`, asking for the final-response flag.
    #[pyfunction(name = "encode_triton_grpc_inputs")]
    #[pyo3(signature = (model, inputs, output_names, *, version = "", stream = false))]
    pub fn encode_triton_grpc_inputs_py<'py>(
        py: Python<'py>,
        model: &str,
        inputs: Vec<(String, String, Vec<usize>, Vec<u8>)>,
        output_names: Vec<String>,
        version: &str,
        stream: bool,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let tensors = inputs
            .into_iter()
            .map(|(name, datatype, shape, data)| {
                let datatype =
                    crate::protocol::tensor::DataType::parse(&datatype).map_err(|_| {
                        crate::error::Error::InvalidArgument(format!(
                            "input {name:?}: unsupported datatype {datatype:?}"
                        ))
                    })?;
                Ok(crate::protocol::tensor::Tensor {
                    name,
                    datatype,
                    shape,
                    data,
                })
            })
            .collect::<crate::error::Result<Vec<_>>>()?;
        let body = py.detach(|| {
            crate::protocol::grpc::encode_infer_request(
                model,
                version,
                tensors,
                &output_names,
                stream,
            )
        })?;
        Ok(PyBytes::new(py, &body))
    }

    /// `encode_triton_grpc_generate(model, body) -> bytes`: a `ModelStreamInfer` request for a
    /// text model from the generate extension's JSON `body` (`text_input`, then parameters).
    #[pyfunction(name = "encode_triton_grpc_generate")]
    pub fn encode_triton_grpc_generate_py<'py>(
        py: Python<'py>,
        model: &str,
        body: &[u8],
    ) -> PyResult<Bound<'py, PyBytes>> {
        let message = crate::protocol::grpc::encode_generate_request(model, body)?;
        Ok(PyBytes::new(py, &message))
    }

    /// `decode_triton_grpc_response(body) -> dict[str, numpy.ndarray]`: a `ModelInferResponse`.
    #[pyfunction(name = "decode_triton_grpc_response")]
    pub fn decode_triton_grpc_response_py<'py>(
        py: Python<'py>,
        body: &[u8],
    ) -> PyResult<Bound<'py, PyDict>> {
        let tensors = crate::protocol::grpc::decode_response(&bytes::Bytes::copy_from_slice(body))?;
        let out = PyDict::new(py);
        for t in &tensors {
            out.set_item(&t.name, tensor_to_numpy(py, t)?)?;
        }
        Ok(out)
    }

    /// `decode_triton_response(body, header_length) -> dict[str, numpy.ndarray]`
    #[pyfunction(name = "decode_triton_response")]
    #[pyo3(signature = (body, header_length = None))]
    pub fn decode_triton_response_py<'py>(
        py: Python<'py>,
        body: &[u8],
        header_length: Option<usize>,
    ) -> PyResult<Bound<'py, PyDict>> {
        let tensors = crate::protocol::triton::decode_response(body, header_length)?;
        let out = PyDict::new(py);
        for t in &tensors {
            out.set_item(&t.name, tensor_to_numpy(py, t)?)?;
        }
        Ok(out)
    }

    /// `parse_model_metadata(body) -> dict`: name, platform, versions, inputs and outputs (each a
    /// dict of name, datatype, shape).
    #[pyfunction(name = "parse_model_metadata")]
    pub fn parse_model_metadata_py<'py>(
        py: Python<'py>,
        body: &[u8],
    ) -> PyResult<Bound<'py, PyDict>> {
        let meta = crate::protocol::triton::parse_model_metadata(body)?;
        metadata_dict(py, &meta)
    }

    /// Model metadata as Python takes it (HTTP's and gRPC's alike): name, platform, versions,
    /// inputs and outputs (each a dict of name, datatype, shape).
    pub(crate) fn metadata_dict<'py>(
        py: Python<'py>,
        meta: &crate::protocol::triton::ModelMetadata,
    ) -> PyResult<Bound<'py, PyDict>> {
        let specs =
            |specs: &[crate::protocol::triton::TensorSpec]| -> PyResult<Bound<'py, PyList>> {
                let list = PyList::empty(py);
                for s in specs {
                    let d = PyDict::new(py);
                    d.set_item("name", &s.name)?;
                    d.set_item("datatype", &s.datatype)?;
                    d.set_item("shape", s.shape.clone())?;
                    list.append(d)?;
                }
                Ok(list)
            };
        let out = PyDict::new(py);
        out.set_item("name", &meta.name)?;
        out.set_item("platform", &meta.platform)?;
        out.set_item("versions", meta.versions.clone())?;
        out.set_item("inputs", specs(&meta.inputs)?)?;
        out.set_item("outputs", specs(&meta.outputs)?)?;
        Ok(out)
    }
}

/// LitServe's codec.
mod litserve {
    use pyo3::prelude::*;
    use pyo3::types::PyBytes;

    use super::tensor::tensor_from_numpy;
    use crate::error::Error;
    use crate::protocol::tensor::DataType;

    /// `encode_litserve_request(tensor) -> bytes`: `{"input": <nested list>}` of a float32 tensor.
    #[pyfunction(name = "encode_litserve_request")]
    pub fn encode_litserve_request_py<'py>(
        py: Python<'py>,
        tensor: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let input = tensor_from_numpy(tensor, "input")?;
        if input.datatype != DataType::Fp32 {
            return Err(Error::UnsupportedType(format!(
                "LitServe requests carry float32, not {}",
                input.datatype
            ))
            .into());
        }
        let body = py.detach(|| crate::protocol::litserve::encode_request(&input))?;
        Ok(PyBytes::new(py, &body))
    }

    /// `check_litserve_response(body, expected_shape=None, key="output") -> int | None`:
    /// validates a response and returns its top-1 index; raises `ProtocolError` when `key` is
    /// missing or its value is not a numeric array, a number or a label.
    #[pyfunction(name = "check_litserve_response")]
    #[pyo3(signature = (body, expected_shape = None, key = "output"))]
    pub fn check_litserve_response_py(
        body: &[u8],
        expected_shape: Option<Vec<i64>>,
        key: &str,
    ) -> PyResult<Option<usize>> {
        let shape: Option<Vec<Option<usize>>> =
            expected_shape.map(|s| s.iter().map(|&d| usize::try_from(d).ok()).collect());
        Ok(crate::protocol::litserve::check_response(
            body,
            key,
            shape.as_deref(),
        )?)
    }

    /// `encode_litserve_image_request(key, image) -> bytes`: `{"<key>": "<base64 of image>"}`.
    #[pyfunction(name = "encode_litserve_image_request")]
    pub fn encode_litserve_image_request_py<'py>(
        py: Python<'py>,
        key: &str,
        image: &[u8],
    ) -> Bound<'py, PyBytes> {
        let body = py.detach(|| crate::protocol::litserve::encode_image_request(key, image));
        PyBytes::new(py, &body)
    }

    /// `litserve_template_placeholders(template) -> list[str]`: the placeholders a template uses;
    /// raises `ValueError` when it is not valid JSON or has an unknown or misplaced placeholder.
    #[pyfunction(name = "litserve_template_placeholders")]
    pub fn litserve_template_placeholders_py(template: &[u8]) -> PyResult<Vec<&'static str>> {
        Ok(crate::protocol::litserve::template_placeholders(template)?)
    }

    /// `fill_litserve_template(template, image, tensor=None) -> bytes`: the template with its
    /// placeholders filled; raises `ValueError` saying what is wrong with the template.
    #[pyfunction(name = "fill_litserve_template")]
    #[pyo3(signature = (template, image, tensor = None))]
    pub fn fill_litserve_template_py<'py>(
        py: Python<'py>,
        template: &[u8],
        image: &[u8],
        tensor: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let tensor = tensor.map(|t| tensor_from_numpy(t, "input")).transpose()?;
        let inputs = crate::protocol::litserve::TemplateInputs {
            image,
            tensor: tensor.as_ref(),
        };
        let body = py.detach(|| crate::protocol::litserve::fill_template(template, &inputs))?;
        Ok(PyBytes::new(py, &body))
    }
}
