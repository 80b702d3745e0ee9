//! The response checks as they were before they walked JSON as it is parsed (a `serde_json::Value`
//! tree of the whole body, binary outputs copied), kept to test that the new ones accept and reject
//! the same responses.
#![allow(clippy::pedantic)]

use serde::Deserialize;
use serde_json::Value;

use crate::error::{Error, Result};
use crate::protocol::tensor::{self, byte_size, DataType, Tensor};
use crate::protocol::triton::{format_shape, ExpectedOutput};

pub fn litserve_check(
    body: &[u8],
    key: &str,
    expected_shape: Option<&[Option<usize>]>,
) -> Result<Option<usize>> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| Error::protocol(format!("response is not valid JSON: {e}")))?;
    let Some(output) = value.get(key) else {
        let keys = match &value {
            Value::Object(map) => {
                let names: Vec<&str> = map.keys().take(8).map(String::as_str).collect();
                format!("it has {names:?}")
            }
            _ => "it is not a JSON object".into(),
        };
        return Err(Error::protocol(format!(
            "response has no \"{key}\" field ({keys}; --litserve-output names the key checked)"
        )));
    };
    match output {
        Value::Array(_) => check_array(key, output, expected_shape),
        _ if expected_shape.is_some() => {
            Err(Error::protocol(format!("\"{key}\" is not a numeric array")))
        }
        Value::Number(n) => {
            if n.as_f64().is_some_and(f64::is_finite) {
                Ok(n.as_u64().and_then(|v| usize::try_from(v).ok()))
            } else {
                Err(Error::protocol(format!("\"{key}\" is not a finite number")))
            }
        }
        Value::String(label) if !label.is_empty() => Ok(None),
        other => Err(Error::protocol(format!(
            "\"{key}\" is {}: expected a numeric array, a class index or a label",
            match other {
                Value::Null => "null",
                Value::Bool(_) => "a boolean",
                Value::String(_) => "an empty string",
                _ => "an object",
            }
        ))),
    }
}

fn check_array(
    key: &str,
    output: &Value,
    expected_shape: Option<&[Option<usize>]>,
) -> Result<Option<usize>> {
    let (data, shape) = tensor::json_array_to_bytes(DataType::Fp64, output)
        .map_err(|e| Error::protocol(format!("\"{key}\" is not a numeric array: {e}")))?;
    if let Some(want) = expected_shape {
        let ok = shape.len() == want.len()
            && shape
                .iter()
                .zip(want)
                .all(|(g, w)| w.is_none_or(|w| w == *g));
        if !ok {
            return Err(Error::protocol(format!(
                "\"{key}\" has shape {shape:?}, expected {}",
                format_shape(want)
            )));
        }
    }
    if !tensor::all_finite(DataType::Fp64, &data) {
        return Err(Error::protocol(format!(
            "\"{key}\" contains non-finite values"
        )));
    }
    let row_len = shape.iter().skip(1).product::<usize>() * 8;
    let first_row = if shape.len() > 1 {
        &data[..row_len.min(data.len())]
    } else {
        &data[..]
    };
    Ok(tensor::argmax(DataType::Fp64, first_row))
}

#[derive(Deserialize)]
struct ResponseHeader {
    #[serde(default)]
    outputs: Vec<OutputHeader>,
    #[serde(default)]
    error: Option<Value>,
}

#[derive(Deserialize)]
struct OutputHeader {
    name: String,
    datatype: String,
    shape: Vec<i64>,
    #[serde(default)]
    parameters: Option<serde_json::Map<String, Value>>,
    #[serde(default)]
    data: Option<Value>,
}

fn shape_of(name: &str, shape: &[i64]) -> Result<Vec<usize>> {
    shape
        .iter()
        .map(|&d| {
            usize::try_from(d).map_err(|_| {
                Error::protocol(format!(
                    "output {name:?} has negative dimension in shape {shape:?}"
                ))
            })
        })
        .collect()
}

/// Decodes an inference response (binary or plain JSON) into its output tensors.
pub fn triton_decode(body: &[u8], header_length: Option<usize>) -> Result<Vec<Tensor>> {
    let header_len = header_length.unwrap_or(body.len());
    if header_len > body.len() {
        return Err(Error::protocol(format!(
            "Inference-Header-Content-Length {header_len} is past the end of the {}-byte body",
            body.len()
        )));
    }
    let header: ResponseHeader = serde_json::from_slice(&body[..header_len]).map_err(|e| {
        Error::protocol(format!("response header is not valid inference JSON: {e}"))
    })?;
    if let Some(err) = header.error {
        return Err(Error::protocol(format!("server reported an error: {err}")));
    }
    let mut offset = header_len;
    let mut tensors = Vec::with_capacity(header.outputs.len());
    for out in header.outputs {
        let datatype = DataType::parse(&out.datatype)
            .map_err(|e| Error::protocol(format!("output {:?}: {e}", out.name)))?;
        let shape = shape_of(&out.name, &out.shape)?;
        let size = byte_size(datatype, &shape)?;
        let binary_size = out
            .parameters
            .as_ref()
            .and_then(|p| p.get("binary_data_size"));
        let data = match (binary_size, &out.data) {
            (Some(v), _) => {
                let n = v
                    .as_u64()
                    .and_then(|n| usize::try_from(n).ok())
                    .ok_or_else(|| {
                        Error::protocol(format!(
                            "output {:?}: binary_data_size {v} is not a size",
                            out.name
                        ))
                    })?;
                if n != size {
                    return Err(Error::protocol(format!(
                        "output {:?}: binary_data_size {n} does not match shape {shape:?} of {datatype} ({size} bytes)",
                        out.name
                    )));
                }
                let end = offset
                    .checked_add(n)
                    .filter(|&e| e <= body.len())
                    .ok_or_else(|| {
                        Error::protocol(format!(
                            "output {:?}: binary data truncated ({} bytes left, {n} announced)",
                            out.name,
                            body.len() - offset
                        ))
                    })?;
                let data = body[offset..end].to_vec();
                offset = end;
                data
            }
            (None, Some(values)) => {
                let (data, _) = tensor::json_array_to_bytes(datatype, values)
                    .map_err(|e| Error::protocol(format!("output {:?}: {e}", out.name)))?;
                if data.len() != size {
                    return Err(Error::protocol(format!(
                        "output {:?}: {} values do not match shape {shape:?}",
                        out.name,
                        data.len() / datatype.size()
                    )));
                }
                data
            }
            (None, None) => {
                return Err(Error::protocol(format!(
                    "output {:?} carries no data",
                    out.name
                )))
            }
        };
        tensors.push(Tensor {
            name: out.name,
            datatype,
            shape,
            data,
        });
    }
    if offset != body.len() {
        return Err(Error::protocol(format!(
            "body has {} bytes after the last output (sizes do not add up)",
            body.len() - offset
        )));
    }
    Ok(tensors)
}

pub fn triton_check(
    body: &[u8],
    header_length: Option<usize>,
    expected: &[ExpectedOutput],
) -> Result<Option<usize>> {
    let outputs = triton_decode(body, header_length)?;
    let mut top1 = None;
    for (i, want) in expected.iter().enumerate() {
        let got = outputs
            .iter()
            .find(|t| t.name == want.name)
            .ok_or_else(|| {
                Error::protocol(format!("output {:?} missing from the response", want.name))
            })?;
        if got.datatype != want.datatype {
            return Err(Error::protocol(format!(
                "output {:?} is {}, the model metadata says {}",
                want.name, got.datatype, want.datatype
            )));
        }
        let shape_ok = got.shape.len() == want.shape.len()
            && got
                .shape
                .iter()
                .zip(&want.shape)
                .all(|(g, w)| w.is_none_or(|w| w == *g));
        if !shape_ok {
            return Err(Error::protocol(format!(
                "output {:?} has shape {:?}, expected {}",
                want.name,
                got.shape,
                format_shape(&want.shape)
            )));
        }
        if !tensor::all_finite(got.datatype, &got.data) {
            return Err(Error::protocol(format!(
                "output {:?} contains NaN or infinite values",
                want.name
            )));
        }
        if i == 0 {
            let row = got.shape.iter().skip(1).product::<usize>() * got.datatype.size();
            let first_row = if got.shape.len() > 1 {
                &got.data[..row.min(got.data.len())]
            } else {
                &got.data[..]
            };
            top1 = tensor::argmax(got.datatype, first_row);
        }
    }
    Ok(top1)
}
