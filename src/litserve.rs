//! LitServe's JSON protocol as served by the reference deployment: `{"input": <nested list>}` in,
//! `{"output": <nested list>}` out.

use serde_json::Value;

use crate::error::{Error, Result};
use crate::tensor::{self, DataType, Tensor};

/// Encodes `{"input": <nested list>}` with every float in its shortest round-tripping form.
pub fn encode_request(input: &Tensor) -> Result<Vec<u8>> {
    let mut body = Vec::with_capacity(input.data.len() * 3 + 16);
    body.extend_from_slice(b"{\"input\":");
    tensor::write_json_array(input.datatype, &input.data, &input.shape, true, &mut body)?;
    body.push(b'}');
    Ok(body)
}

/// Checks a response: a JSON object whose `"output"` is a regular numeric array, finite, of the
/// expected shape when one is given. Returns the argmax of its first row (the top-1 class).
pub fn check_response(
    body: &[u8],
    expected_shape: Option<&[Option<usize>]>,
) -> Result<Option<usize>> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| Error::protocol(format!("response is not valid JSON: {e}")))?;
    let output = value
        .get("output")
        .ok_or_else(|| Error::protocol("response has no \"output\" field"))?;
    let (data, shape) = tensor::json_array_to_bytes(DataType::Fp64, output)
        .map_err(|e| Error::protocol(format!("\"output\" is not a numeric array: {e}")))?;
    if let Some(want) = expected_shape {
        let ok = shape.len() == want.len()
            && shape
                .iter()
                .zip(want)
                .all(|(g, w)| w.is_none_or(|w| w == *g));
        if !ok {
            return Err(Error::protocol(format!(
                "\"output\" has shape {shape:?}, expected {}",
                crate::triton::format_shape(want)
            )));
        }
    }
    if !tensor::all_finite(DataType::Fp64, &data) {
        return Err(Error::protocol("\"output\" contains non-finite values"));
    }
    let row_len = shape.iter().skip(1).product::<usize>() * 8;
    let first_row = if shape.len() > 1 {
        &data[..row_len.min(data.len())]
    } else {
        &data[..]
    };
    Ok(tensor::argmax(DataType::Fp64, first_row))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_is_nested_input() {
        let t = Tensor {
            name: "input".into(),
            datatype: DataType::Fp32,
            shape: vec![1, 2, 2],
            data: [0.1f32, 0.2, 0.3, 1e-8]
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect(),
        };
        let body = encode_request(&t).unwrap();
        assert_eq!(
            std::str::from_utf8(&body).unwrap(),
            "{\"input\":[[[0.1,0.2],[0.3,1e-8]]]}"
        );
    }

    #[test]
    fn response_checks() {
        assert_eq!(
            check_response(br#"{"output":[[0.1,0.9,0.3]]}"#, Some(&[Some(1), None])).unwrap(),
            Some(1)
        );
        assert_eq!(
            check_response(br#"{"output":[3, 1, 7]}"#, None).unwrap(),
            Some(2)
        );
        for (body, needle) in [
            (&br#"{"result":[1]}"#[..], "no \"output\""),
            (b"{\"output\":[[1,2],[3]]}", "numeric array"),
            (b"{\"output\": \"x\"}", "numeric array"),
            (b"nope", "not valid JSON"),
            (b"{\"output\":[[1,2]]}", "shape"),
        ] {
            let err = check_response(body, Some(&[Some(1), Some(3)])).unwrap_err();
            assert!(err.to_string().contains(needle), "{needle}: {err}");
        }
    }
}

/// Python bindings of the codec.
pub mod py {
    use pyo3::prelude::*;
    use pyo3::types::PyBytes;

    use crate::error::Error;
    use crate::tensor::py::tensor_from_numpy;
    use crate::tensor::DataType;

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
        let body = py.detach(|| super::encode_request(&input))?;
        Ok(PyBytes::new(py, &body))
    }

    /// `check_litserve_response(body, expected_shape=None) -> int | None`: validates a response and
    /// returns its top-1 index; raises `ProtocolError` when it is not a valid `{"output": ...}`.
    #[pyfunction(name = "check_litserve_response")]
    #[pyo3(signature = (body, expected_shape = None))]
    pub fn check_litserve_response_py(
        body: &[u8],
        expected_shape: Option<Vec<i64>>,
    ) -> PyResult<Option<usize>> {
        let shape: Option<Vec<Option<usize>>> =
            expected_shape.map(|s| s.iter().map(|&d| usize::try_from(d).ok()).collect());
        Ok(super::check_response(body, shape.as_deref())?)
    }
}

#[cfg(test)]
mod fuzz {
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(crate::tensor::fuzz_config())]

        #[test]
        fn response_check_never_panics(body in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = super::check_response(&body, Some(&[Some(1), None]));
        }

        #[test]
        fn float32_json_round_trips(values in proptest::collection::vec(any::<f32>().prop_filter("finite", |v| v.is_finite()), 1..50)) {
            let t = crate::tensor::Tensor {
                name: "input".into(),
                datatype: crate::tensor::DataType::Fp32,
                shape: vec![1, values.len()],
                data: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
            };
            let body = super::encode_request(&t).unwrap();
            let parsed: serde_json::Value = serde_json::from_slice(&body).unwrap();
            let back: Vec<f32> = parsed["input"][0].as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect();
            prop_assert_eq!(back.iter().map(|v| v.to_bits()).collect::<Vec<_>>(), values.iter().map(|v| v.to_bits()).collect::<Vec<_>>());
        }
    }
}
