//! Triton's KServe v2 HTTP protocol with the binary tensor extension: request encoding, response
//! decoding and model metadata.
//!
//! A binary message is a JSON header followed by raw little-endian tensor bytes; the header's length
//! travels in `Inference-Header-Content-Length`, and each binary tensor names its size in
//! `parameters.binary_data_size`, in the order the tensors appear in the header.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{json, Value};

use crate::error::{Error, Result};
use crate::protocol::json_array::{self, Walk};
use crate::protocol::tensor::{self, byte_size, DataType, Tensor};

/// The HTTP header carrying the JSON header's length.
pub const HEADER_LENGTH_HEADER: &str = "inference-header-content-length";

/// Encodes a KServe v2 inference request for one input (see [`encode_inputs`]).
pub fn encode_request(
    input: &Tensor,
    output_names: &[String],
    binary: bool,
) -> Result<(Vec<u8>, Option<usize>)> {
    encode_inputs(std::slice::from_ref(input), output_names, binary)
}

/// Encodes a KServe v2 inference request for `inputs`, in order. Binary mode returns the JSON
/// header's length (the `Inference-Header-Content-Length`), the tensors' bytes following it in the
/// inputs' order; JSON mode writes every tensor inline.
pub fn encode_inputs(
    inputs: &[Tensor],
    output_names: &[String],
    binary: bool,
) -> Result<(Vec<u8>, Option<usize>)> {
    for input in inputs {
        let expected = byte_size(input.datatype, &input.shape)?;
        if input.data.len() != expected {
            return Err(Error::InvalidArgument(format!(
                "input {:?} has {} bytes, shape {:?} of {} needs {expected}",
                input.name,
                input.data.len(),
                input.shape,
                input.datatype
            )));
        }
    }
    let outputs: Vec<Value> = output_names
        .iter()
        .map(|name| json!({"name": name, "parameters": {"binary_data": binary}}))
        .collect();
    if binary {
        let header = json!({
            "inputs": inputs.iter().map(|input| json!({
                "name": input.name,
                "shape": input.shape,
                "datatype": input.datatype.name(),
                "parameters": {"binary_data_size": input.data.len()},
            })).collect::<Vec<_>>(),
            "outputs": outputs,
        });
        let mut body = to_json(&header)?;
        let header_len = body.len();
        body.reserve(inputs.iter().map(|i| i.data.len()).sum());
        for input in inputs {
            body.extend_from_slice(&input.data);
        }
        return Ok((body, Some(header_len)));
    }
    // JSON mode: the data goes inline, written by hand so floats keep their shortest form.
    let total: usize = inputs.iter().map(|i| i.data.len()).sum();
    let mut body = Vec::with_capacity(total * 3 + 256);
    body.extend_from_slice(b"{\"inputs\":[");
    for (i, input) in inputs.iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        body.extend_from_slice(b"{\"name\":");
        body.extend_from_slice(&to_json(&input.name)?);
        body.extend_from_slice(b",\"shape\":");
        body.extend_from_slice(&to_json(&input.shape)?);
        body.extend_from_slice(
            format!(",\"datatype\":\"{}\",\"data\":", input.datatype).as_bytes(),
        );
        tensor::write_json_array(input.datatype, &input.data, &input.shape, false, &mut body)?;
        body.push(b'}');
    }
    body.extend_from_slice(b"],\"outputs\":");
    body.extend_from_slice(&to_json(&outputs)?);
    body.push(b'}');
    Ok((body, None))
}

fn to_json<T: serde::Serialize + ?Sized>(value: &T) -> Result<Vec<u8>> {
    serde_json::to_vec(value).map_err(|e| Error::InvalidArgument(e.to_string()))
}

#[derive(Deserialize)]
struct ResponseHeader<'a> {
    #[serde(default, borrow)]
    outputs: Vec<OutputHeader<'a>>,
    #[serde(default)]
    error: Option<Value>,
}

#[derive(Deserialize)]
struct OutputHeader<'a> {
    name: String,
    datatype: String,
    shape: Vec<i64>,
    #[serde(default)]
    parameters: Option<serde_json::Map<String, Value>>,
    /// Left as text, walked once the datatype is known: a tree of it would cost ~16x its size.
    #[serde(default, borrow)]
    data: Option<&'a RawValue>,
}

/// Parses the `Inference-Header-Content-Length` value.
pub fn parse_header_length(value: &[u8]) -> Result<usize> {
    let text = std::str::from_utf8(value)
        .map_err(|_| Error::protocol("Inference-Header-Content-Length is not text"))?;
    text.trim().parse::<usize>().map_err(|_| {
        Error::protocol(format!(
            "Inference-Header-Content-Length {text:?} is not a non-negative integer"
        ))
    })
}

pub(crate) fn shape_of(name: &str, shape: &[i64]) -> Result<Vec<usize>> {
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
pub fn decode_response(body: &[u8], header_length: Option<usize>) -> Result<Vec<Tensor>> {
    Ok(decode_outputs(body, header_length, true)?
        .into_iter()
        .map(|out| Tensor {
            name: out.name,
            datatype: out.datatype,
            shape: out.shape,
            data: out.data.into_owned(),
        })
        .collect())
}

/// An output of a response: binary data borrowed from the body; JSON data walked, kept only when
/// asked for, and summarised. gRPC responses make these too ([`super::grpc`]), to be checked alike.
pub(crate) struct Output<'a> {
    pub(crate) name: String,
    pub(crate) datatype: DataType,
    pub(crate) shape: Vec<usize>,
    pub(crate) data: Cow<'a, [u8]>,
    /// For JSON data: whether every value is finite, and the top-1 of the first row.
    summary: Option<Summary>,
}

impl<'a> Output<'a> {
    /// An output whose data is its raw little-endian bytes, already checked against its shape.
    pub(crate) fn raw(name: String, datatype: DataType, shape: Vec<usize>, data: &'a [u8]) -> Self {
        Output {
            name,
            datatype,
            shape,
            data: Cow::Borrowed(data),
            summary: None,
        }
    }
}

#[derive(Default)]
struct Summary {
    all_finite: bool,
    top1: Option<usize>,
}

/// Top-1 of a stream of values, as [`tensor::argmax`] finds it (first of equals, none after a NaN).
#[derive(Default)]
struct Argmax {
    best: Option<(usize, f64)>,
    nan: bool,
}

impl Argmax {
    fn push(&mut self, i: usize, v: f64) {
        if v.is_nan() {
            self.nan = true;
        } else if self.best.is_none_or(|(_, b)| v > b) {
            self.best = Some((i, v));
        }
    }

    fn top1(&self) -> Option<usize> {
        self.best.filter(|_| !self.nan).map(|(i, _)| i)
    }
}

/// Elements in the first row of a tensor of this shape (all of them for fewer than 2 dimensions).
fn first_row_len(shape: &[usize]) -> usize {
    if shape.len() > 1 {
        shape.iter().skip(1).product()
    } else {
        usize::MAX
    }
}

/// Walks an output's JSON data: checks it as `tensor::json_array_to_bytes` would, summarises it,
/// and keeps its bytes when `keep`.
fn walk_json_data(
    name: &str,
    datatype: DataType,
    shape: &[usize],
    raw: &RawValue,
    keep: bool,
) -> Result<(Vec<u8>, usize, Summary)> {
    let row = first_row_len(shape);
    let mut kept = Vec::new();
    let mut all_finite = true;
    let mut argmax = Argmax::default();
    let sink = |i: usize, _: bool, bytes: &[u8]| {
        let v = tensor::element_f64(datatype, bytes, 0);
        all_finite &= !datatype.is_float() || v.is_finite();
        if i < row {
            argmax.push(i, v);
        }
        if keep {
            kept.extend_from_slice(bytes);
        }
    };
    let mut walk = Walk::new(datatype, sink);
    let walked = json_array::walk_text(raw.get(), &mut walk);
    let (result, _) = walk.finish();
    let (_, count) = walked
        .and(result)
        .map_err(|e| Error::protocol(format!("output {name:?}: {e}")))?;
    Ok((
        kept,
        count,
        Summary {
            all_finite,
            top1: argmax.top1(),
        },
    ))
}

/// The outputs of a response, checked for consistency; JSON data is kept only when `keep_json`.
fn decode_outputs(
    body: &[u8],
    header_length: Option<usize>,
    keep_json: bool,
) -> Result<Vec<Output<'_>>> {
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
        // The server's words, normalised as an error body is: one Locust failure entry per kind of
        // error, however many request ids or timestamps the server puts in it, and on one line.
        let text = err.as_str().map_or_else(|| err.to_string(), str::to_owned);
        return Err(Error::protocol(format!(
            "server reported an error: {}",
            crate::protocol::reason::normalise(&text)
        )));
    }
    let mut offset = header_len;
    let mut outputs = Vec::with_capacity(header.outputs.len());
    for out in header.outputs {
        let datatype = DataType::parse(&out.datatype)
            .map_err(|e| Error::protocol(format!("output {:?}: {e}", out.name)))?;
        let shape = shape_of(&out.name, &out.shape)?;
        let size = byte_size(datatype, &shape)?;
        let binary_size = out
            .parameters
            .as_ref()
            .and_then(|p| p.get("binary_data_size"));
        let (data, summary) = match (binary_size, out.data) {
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
                let data = Cow::Borrowed(&body[offset..end]);
                offset = end;
                (data, None)
            }
            (None, Some(raw)) => {
                let (data, count, summary) =
                    walk_json_data(&out.name, datatype, &shape, raw, keep_json)?;
                if count.checked_mul(datatype.size()) != Some(size) {
                    return Err(Error::protocol(format!(
                        "output {:?}: {count} values do not match shape {shape:?}",
                        out.name,
                    )));
                }
                (Cow::Owned(data), Some(summary))
            }
            (None, None) => {
                return Err(Error::protocol(format!(
                    "output {:?} carries no data",
                    out.name
                )))
            }
        };
        outputs.push(Output {
            name: out.name,
            datatype,
            shape,
            data,
            summary,
        });
    }
    if offset != body.len() {
        return Err(Error::protocol(format!(
            "body has {} bytes after the last output (sizes do not add up)",
            body.len() - offset
        )));
    }
    Ok(outputs)
}

/// A tensor as model metadata describes it; `-1` marks a variable dimension.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct TensorSpec {
    pub name: String,
    pub datatype: String,
    pub shape: Vec<i64>,
}

/// `GET /v2/models/{model}`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ModelMetadata {
    pub name: String,
    #[serde(default)]
    pub platform: String,
    #[serde(default)]
    pub versions: Vec<String>,
    pub inputs: Vec<TensorSpec>,
    pub outputs: Vec<TensorSpec>,
}

pub fn parse_model_metadata(body: &[u8]) -> Result<ModelMetadata> {
    let meta: ModelMetadata = serde_json::from_slice(body)
        .map_err(|e| Error::protocol(format!("model metadata is not valid: {e}")))?;
    meta.checked()
}

impl ModelMetadata {
    /// The metadata, when it declares inputs and outputs (over HTTP or gRPC).
    pub fn checked(self) -> Result<Self> {
        if self.inputs.is_empty() || self.outputs.is_empty() {
            return Err(Error::protocol(format!(
                "model {:?} declares no inputs or no outputs",
                self.name
            )));
        }
        Ok(self)
    }
}

/// What a response must contain to count as a success.
#[derive(Debug, Clone)]
pub struct ExpectedOutput {
    pub name: String,
    pub datatype: DataType,
    /// `None` entries accept any size.
    pub shape: Vec<Option<usize>>,
}

/// Checks a response body against the expected outputs; returns the argmax of the first expected
/// output's first row (the top-1 class).
pub fn check_response(
    body: &[u8],
    header_length: Option<usize>,
    expected: &[ExpectedOutput],
) -> Result<Option<usize>> {
    check_outputs(&decode_outputs(body, header_length, false)?, expected)
}

/// Checks decoded outputs against the expected ones; returns the argmax of the first expected
/// output's first row (the top-1 class).
pub(crate) fn check_outputs(
    outputs: &[Output<'_>],
    expected: &[ExpectedOutput],
) -> Result<Option<usize>> {
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
        let finite = match &got.summary {
            Some(summary) => summary.all_finite,
            None => tensor::all_finite(got.datatype, &got.data),
        };
        if !finite {
            return Err(Error::protocol(format!(
                "output {:?} contains NaN or infinite values",
                want.name
            )));
        }
        if i == 0 {
            top1 = if let Some(summary) = &got.summary {
                summary.top1
            } else {
                let row = first_row_len(&got.shape).saturating_mul(got.datatype.size());
                tensor::argmax(got.datatype, &got.data[..row.min(got.data.len())])
            };
        }
    }
    Ok(top1)
}

pub fn format_shape(shape: &[Option<usize>]) -> String {
    let dims: Vec<String> = shape
        .iter()
        .map(|d| d.map_or_else(|| "-1".to_string(), |d| d.to_string()))
        .collect();
    format!("[{}]", dims.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::protocol::tensor::fp32;

    fn binary_response(outputs: &[Tensor]) -> (Vec<u8>, usize) {
        let header = json!({
            "model_name": "m", "model_version": "1",
            "outputs": outputs.iter().map(|t| json!({
                "name": t.name, "datatype": t.datatype.name(), "shape": t.shape,
                "parameters": {"binary_data_size": t.data.len()}
            })).collect::<Vec<_>>()
        });
        let mut body = serde_json::to_vec(&header).unwrap();
        let len = body.len();
        for t in outputs {
            body.extend_from_slice(&t.data);
        }
        (body, len)
    }

    #[test]
    fn binary_request_layout() {
        let input = fp32("x", &[1, 2], &[1.5, -2.0]);
        let (body, len) = encode_request(&input, &["x.45".to_string()], true).unwrap();
        let len = len.unwrap();
        let header: Value = serde_json::from_slice(&body[..len]).unwrap();
        assert_eq!(header["inputs"][0]["name"], "x");
        assert_eq!(header["inputs"][0]["shape"], json!([1, 2]));
        assert_eq!(header["inputs"][0]["datatype"], "FP32");
        assert_eq!(header["inputs"][0]["parameters"]["binary_data_size"], 8);
        assert_eq!(
            header["outputs"][0],
            json!({"name": "x.45", "parameters": {"binary_data": true}})
        );
        assert_eq!(&body[len..], &input.data[..]);
    }

    #[test]
    fn json_request_layout() {
        let input = fp32("input__0", &[1, 2], &[0.1, 2.0]);
        let (body, len) = encode_request(&input, &["output__0".to_string()], false).unwrap();
        assert_eq!(len, None);
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["inputs"][0]["data"], json!([0.1, 2.0]));
        assert_eq!(v["outputs"][0]["parameters"]["binary_data"], false);
    }

    #[test]
    fn request_size_mismatch_is_rejected() {
        let mut input = fp32("x", &[1, 3], &[1.0, 2.0]);
        input.shape = vec![1, 3];
        assert!(matches!(
            encode_request(&input, &[], true),
            Err(Error::InvalidArgument(_))
        ));
    }

    #[test]
    fn decodes_binary_outputs_in_order() {
        let a = fp32("a", &[1, 3], &[1.0, 9.0, 3.0]);
        let b = Tensor {
            name: "b".into(),
            datatype: DataType::Int64,
            shape: vec![2],
            data: [7i64, 8].iter().flat_map(|v| v.to_le_bytes()).collect(),
        };
        let (body, len) = binary_response(&[a.clone(), b.clone()]);
        let got = decode_response(&body, Some(len)).unwrap();
        assert_eq!(got, vec![a, b]);
    }

    #[test]
    fn decodes_json_outputs() {
        let body =
            br#"{"outputs":[{"name":"o","datatype":"FP16","shape":[1,2],"data":[0.5,-1.0]}]}"#;
        let got = decode_response(body, None).unwrap();
        assert_eq!(got[0].datatype, DataType::Fp16);
        assert_eq!(
            got[0].data,
            [
                half::f16::from_f32(0.5).to_le_bytes(),
                half::f16::from_f32(-1.0).to_le_bytes()
            ]
            .concat()
        );
    }

    #[test]
    fn inconsistencies_are_protocol_errors() {
        let a = fp32("a", &[1, 2], &[1.0, 2.0]);
        let (body, len) = binary_response(&[a]);
        let cases: Vec<(Vec<u8>, Option<usize>, &str)> = vec![
            (body.clone(), Some(body.len() + 1), "past the end"),
            (body[..body.len() - 1].to_vec(), Some(len), "truncated"),
            ([body.clone(), vec![0]].concat(), Some(len), "do not add up"),
            (body.clone(), Some(len - 1), "not valid"),
            (b"{\"outputs\":[{\"name\":\"o\",\"datatype\":\"BF17\",\"shape\":[1],\"data\":[1]}]}".to_vec(), None, "datatype"),
            (b"{\"outputs\":[{\"name\":\"o\",\"datatype\":\"FP32\",\"shape\":[2],\"data\":[1]}]}".to_vec(), None, "do not match"),
            (b"{\"outputs\":[{\"name\":\"o\",\"datatype\":\"FP32\",\"shape\":[-2],\"data\":[]}]}".to_vec(), None, "negative"),
            (b"{\"outputs\":[{\"name\":\"o\",\"datatype\":\"FP32\",\"shape\":[4611686018427387904,4],\"parameters\":{\"binary_data_size\":4}}]}".to_vec(), None, "too large"),
            (b"{\"error\":\"model exploded\"}".to_vec(), None, "exploded"),
            (b"{\"outputs\":[{\"name\":\"o\",\"datatype\":\"FP32\",\"shape\":[1]}]}".to_vec(), None, "no data"),
        ];
        for (body, len, needle) in cases {
            let err = decode_response(&body, len).unwrap_err();
            assert!(matches!(err, Error::Protocol(_)), "{err}");
            assert!(err.to_string().contains(needle), "{needle}: {err}");
        }
    }

    /// A server's error text varies per request (ids, times) and may hold line breaks: the failure
    /// names one kind of error, on one line, whatever the request.
    #[test]
    fn a_server_reported_error_is_one_normalised_line() {
        let reasons: Vec<String> = [
            "req 81f3a2c9d04b: timed out\nat 12:00:01",
            "req 0c1d2e3f4a5b: timed out\nat 12:00:02",
        ]
        .iter()
        .map(|text| {
            let body = serde_json::to_vec(&json!({ "error": text })).unwrap();
            decode_response(&body, None).unwrap_err().to_string()
        })
        .collect();
        assert_eq!(reasons[0], reasons[1]);
        assert!(!reasons[0].contains('\n'), "{}", reasons[0]);
        assert!(reasons[0].contains("timed out"), "{}", reasons[0]);
        let long = serde_json::to_vec(&json!({ "error": "word ".repeat(1000) })).unwrap();
        assert!(decode_response(&long, None).unwrap_err().to_string().len() < 300);
    }

    #[test]
    fn header_length_parsing() {
        assert_eq!(parse_header_length(b" 123 ").unwrap(), 123);
        for bad in [&b"-1"[..], b"abc", b"", b"1e3", b"\xff"] {
            assert!(parse_header_length(bad).is_err());
        }
    }

    #[test]
    fn check_response_validates_and_finds_top1() {
        let want = vec![ExpectedOutput {
            name: "a".into(),
            datatype: DataType::Fp32,
            shape: vec![None, Some(3)],
        }];
        let (body, len) = binary_response(&[fp32("a", &[1, 3], &[1.0, 9.0, 3.0])]);
        assert_eq!(check_response(&body, Some(len), &want).unwrap(), Some(1));
        let (body, len) = binary_response(&[fp32("a", &[1, 2], &[1.0, 9.0])]);
        assert!(check_response(&body, Some(len), &want)
            .unwrap_err()
            .to_string()
            .contains("shape"));
        let (body, len) = binary_response(&[fp32("b", &[1, 3], &[1.0, 9.0, 3.0])]);
        assert!(check_response(&body, Some(len), &want)
            .unwrap_err()
            .to_string()
            .contains("missing"));
        let (body, len) = binary_response(&[fp32("a", &[1, 3], &[1.0, f32::INFINITY, 3.0])]);
        assert!(check_response(&body, Some(len), &want)
            .unwrap_err()
            .to_string()
            .contains("infinite"));
    }

    #[test]
    fn metadata() {
        let body = br#"{"name":"resnet50_onnx","versions":["1"],"platform":"python","inputs":[{"name":"x","datatype":"FP32","shape":[-1,3,224,224]}],"outputs":[{"name":"x.45","datatype":"FP32","shape":[-1,1000]}]}"#;
        let m = parse_model_metadata(body).unwrap();
        assert_eq!(m.inputs[0].name, "x");
        assert_eq!(m.outputs[0].shape, vec![-1, 1000]);
        assert!(parse_model_metadata(b"{\"name\":\"m\",\"inputs\":[],\"outputs\":[]}").is_err());
        assert!(parse_model_metadata(b"not json").is_err());
    }
}

/// Property tests ("fuzzing" on stable Rust): the decoder and header parser never panic, whatever
/// the bytes, and every encoded tensor decodes back to itself. `PROPTEST_CASES=100000 cargo test
/// fuzz` runs a longer campaign.
#[cfg(test)]
mod fuzz {
    use proptest::prelude::*;

    use super::*;

    fn datatype() -> impl Strategy<Value = DataType> {
        proptest::sample::select(DataType::ALL.to_vec())
    }

    proptest! {
        #![proptest_config(crate::protocol::tensor::fuzz_config())]

        #[test]
        fn decoder_never_panics_on_arbitrary_bytes(body in proptest::collection::vec(any::<u8>(), 0..600), len in proptest::option::of(0usize..700)) {
            let _ = decode_response(&body, len);
        }

        #[test]
        fn decoder_never_panics_on_mutated_valid_responses(
            values in proptest::collection::vec(any::<f32>(), 0..64),
            flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4),
            cut in any::<prop::sample::Index>(),
            len_delta in -3i64..3,
        ) {
            let data: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
            let header = json!({"outputs": [{"name": "o", "datatype": "FP32", "shape": [1, values.len()],
                "parameters": {"binary_data_size": data.len()}}]});
            let mut body = serde_json::to_vec(&header).unwrap();
            let header_len = body.len();
            body.extend_from_slice(&data);
            prop_assert_eq!(decode_response(&body, Some(header_len)).unwrap()[0].data.clone(), data);
            for (at, byte) in flips {
                let i = at.index(body.len());
                body[i] = byte;
            }
            let keep = cut.index(body.len() + 1);
            body.truncate(keep);
            let len = usize::try_from(header_len as i64 + len_delta).unwrap_or(0);
            let _ = decode_response(&body, Some(len));
            let _ = check_response(&body, Some(len), &[ExpectedOutput { name: "o".into(), datatype: DataType::Fp32, shape: vec![Some(1), None] }]);
        }

        #[test]
        fn header_length_parser_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..24)) {
            let _ = parse_header_length(&bytes);
        }

        #[test]
        fn binary_round_trip(dt in datatype(), dims in proptest::collection::vec(0usize..5, 1..4), seed in any::<u64>()) {
            let size = byte_size(dt, &dims).unwrap();
            let data: Vec<u8> = (0..size).map(|i| (seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(i as u64) >> 24) as u8).collect();
            let input = Tensor { name: "t".into(), datatype: dt, shape: dims.clone(), data };
            let (body, len) = encode_request(&input, &[], true).unwrap();
            let header: Value = serde_json::from_slice(&body[..len.unwrap()]).unwrap();
            let response = json!({"outputs": [{"name": "t", "datatype": dt.name(), "shape": dims,
                "parameters": {"binary_data_size": size}}]});
            let mut reply = serde_json::to_vec(&response).unwrap();
            let reply_len = reply.len();
            reply.extend_from_slice(&body[len.unwrap()..]);
            prop_assert_eq!(&header["inputs"][0]["datatype"], dt.name());
            prop_assert_eq!(decode_response(&reply, Some(reply_len)).unwrap(), vec![input]);
        }
    }
}
