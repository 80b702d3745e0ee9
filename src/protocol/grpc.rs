//! Triton's KServe v2 gRPC protocol (`inference.GRPCInferenceService`): the messages, generated
//! at build time from `proto/grpc_service.proto`; the inference request, encoded once; the
//! response, checked as an HTTP one is ([`triton::check_outputs`]); and the start-up calls'
//! answers (model metadata, statistics) in the shapes the HTTP path gives Python.
//!
//! Tensors travel as raw little-endian bytes (`raw_input_contents`, `raw_output_contents`), one
//! entry per tensor in the order the tensors are listed, as Triton's own clients send them.

use bytes::Bytes;
use prost::Message;

use crate::error::{Error, Result};
use crate::protocol::tensor::{byte_size, DataType, Tensor};
use crate::protocol::triton::{self, ExpectedOutput, Output};

/// The messages of `proto/grpc_service.proto` (package `inference`).
#[allow(clippy::pedantic, clippy::all, missing_docs, dead_code)]
pub(crate) mod pb {
    include!(concat!(env!("OUT_DIR"), "/inference.rs"));
}

/// A `ModelInferRequest` for `model` (and `version`, empty: the server's choice) carrying
/// `inputs` as raw contents and asking for `output_names`.
pub fn encode_infer_request(
    model: &str,
    version: &str,
    inputs: Vec<Tensor>,
    output_names: &[String],
) -> Result<Vec<u8>> {
    let mut tensors = Vec::with_capacity(inputs.len());
    let mut raw = Vec::with_capacity(inputs.len());
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
        let shape = input
            .shape
            .iter()
            .map(|&d| i64::try_from(d))
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|_| {
                Error::InvalidArgument(format!("input {:?}: shape too large", input.name))
            })?;
        tensors.push(pb::model_infer_request::InferInputTensor {
            name: input.name,
            datatype: input.datatype.name().to_owned(),
            shape,
            ..Default::default()
        });
        raw.push(Bytes::from(input.data));
    }
    let request = pb::ModelInferRequest {
        model_name: model.to_owned(),
        model_version: version.to_owned(),
        inputs: tensors,
        outputs: output_names
            .iter()
            .map(|name| pb::model_infer_request::InferRequestedOutputTensor {
                name: name.clone(),
                ..Default::default()
            })
            .collect(),
        raw_input_contents: raw,
        ..Default::default()
    };
    Ok(request.encode_to_vec())
}

/// An output's name, datatype and shape, checked against its raw contents' size.
type OutputSpec = (String, DataType, Vec<usize>);

/// Decodes a `ModelInferResponse` into its outputs, each checked against its shape; the outputs'
/// data are slices of `body`.
fn decode_outputs(body: &Bytes) -> Result<(pb::ModelInferResponse, Vec<OutputSpec>)> {
    let response = pb::ModelInferResponse::decode(body.clone())
        .map_err(|e| Error::protocol(format!("response is not a ModelInferResponse: {e}")))?;
    if response.outputs.iter().any(|o| o.contents.is_some()) {
        return Err(Error::protocol(
            "response carries typed tensor contents, not raw_output_contents",
        ));
    }
    if response.outputs.len() != response.raw_output_contents.len() {
        return Err(Error::protocol(format!(
            "response has {} outputs and {} raw contents",
            response.outputs.len(),
            response.raw_output_contents.len()
        )));
    }
    let mut specs = Vec::with_capacity(response.outputs.len());
    for (out, raw) in response.outputs.iter().zip(&response.raw_output_contents) {
        let datatype = DataType::parse(&out.datatype)
            .map_err(|e| Error::protocol(format!("output {:?}: {e}", out.name)))?;
        let shape = triton::shape_of(&out.name, &out.shape)?;
        let size = byte_size(datatype, &shape)?;
        if raw.len() != size {
            return Err(Error::protocol(format!(
                "output {:?}: {} raw bytes do not match shape {shape:?} of {datatype} ({size} bytes)",
                out.name,
                raw.len()
            )));
        }
        specs.push((out.name.clone(), datatype, shape));
    }
    Ok((response, specs))
}

/// Checks a `ModelInferResponse` against the expected outputs as an HTTP response is checked;
/// returns the top-1 class of the first expected output's first row.
pub fn check_response(body: &Bytes, expected: &[ExpectedOutput]) -> Result<Option<usize>> {
    let (response, specs) = decode_outputs(body)?;
    let outputs: Vec<Output<'_>> = specs
        .into_iter()
        .zip(&response.raw_output_contents)
        .map(|((name, datatype, shape), raw)| Output::raw(name, datatype, shape, raw))
        .collect();
    triton::check_outputs(&outputs, expected)
}

/// The outputs of a `ModelInferResponse` as tensors (for tests and Python's decoding).
pub fn decode_response(body: &Bytes) -> Result<Vec<Tensor>> {
    let (response, specs) = decode_outputs(body)?;
    Ok(specs
        .into_iter()
        .zip(&response.raw_output_contents)
        .map(|((name, datatype, shape), raw)| Tensor {
            name,
            datatype,
            shape,
            data: raw.to_vec(),
        })
        .collect())
}

/// A gRPC status code's name, as the protocol spells it.
pub fn code_name(code: i32) -> &'static str {
    match code {
        0 => "OK",
        1 => "CANCELLED",
        2 => "UNKNOWN",
        3 => "INVALID_ARGUMENT",
        4 => "DEADLINE_EXCEEDED",
        5 => "NOT_FOUND",
        6 => "ALREADY_EXISTS",
        7 => "PERMISSION_DENIED",
        8 => "RESOURCE_EXHAUSTED",
        9 => "FAILED_PRECONDITION",
        10 => "ABORTED",
        11 => "OUT_OF_RANGE",
        12 => "UNIMPLEMENTED",
        13 => "INTERNAL",
        14 => "UNAVAILABLE",
        15 => "DATA_LOSS",
        16 => "UNAUTHENTICATED",
        _ => "UNKNOWN_CODE",
    }
}

/// Decodes a message of type `M` from a response body.
pub fn decode<M: Message + Default>(body: Bytes, what: &str) -> Result<M> {
    M::decode(body).map_err(|e| Error::protocol(format!("{what} is not valid protobuf: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn fp32(name: &str, shape: &[usize], values: &[f32]) -> Tensor {
        Tensor {
            name: name.into(),
            datatype: DataType::Fp32,
            shape: shape.to_vec(),
            data: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        }
    }

    fn response(outputs: &[Tensor]) -> Bytes {
        pb::ModelInferResponse {
            model_name: "m".into(),
            outputs: outputs
                .iter()
                .map(|t| pb::model_infer_response::InferOutputTensor {
                    name: t.name.clone(),
                    datatype: t.datatype.name().into(),
                    shape: t.shape.iter().map(|&d| d as i64).collect(),
                    ..Default::default()
                })
                .collect(),
            raw_output_contents: outputs
                .iter()
                .map(|t| Bytes::from(t.data.clone()))
                .collect(),
            ..Default::default()
        }
        .encode_to_vec()
        .into()
    }

    fn want(name: &str, shape: &[Option<usize>]) -> Vec<ExpectedOutput> {
        vec![ExpectedOutput {
            name: name.into(),
            datatype: DataType::Fp32,
            shape: shape.to_vec(),
        }]
    }

    #[test]
    fn the_request_carries_raw_contents_in_input_order() {
        let a = fp32("a", &[1, 2], &[1.5, -2.0]);
        let b = Tensor {
            name: "b".into(),
            datatype: DataType::Uint8,
            shape: vec![3],
            data: vec![7, 8, 9],
        };
        let body =
            encode_infer_request("m", "2", vec![a.clone(), b.clone()], &["o".into()]).unwrap();
        let got = pb::ModelInferRequest::decode(&body[..]).unwrap();
        assert_eq!(
            (got.model_name.as_str(), got.model_version.as_str()),
            ("m", "2")
        );
        assert_eq!(got.inputs[0].name, "a");
        assert_eq!(got.inputs[0].datatype, "FP32");
        assert_eq!(got.inputs[0].shape, vec![1, 2]);
        assert_eq!(got.inputs[1].datatype, "UINT8");
        assert_eq!(
            got.raw_input_contents,
            vec![Bytes::from(a.data), Bytes::from(b.data)]
        );
        assert_eq!(got.outputs[0].name, "o");
        assert!(got.inputs.iter().all(|i| i.contents.is_none()));
    }

    #[test]
    fn a_request_whose_data_does_not_fit_its_shape_is_refused() {
        let mut a = fp32("a", &[1, 2], &[1.5, -2.0]);
        a.shape = vec![1, 3];
        assert!(matches!(
            encode_infer_request("m", "", vec![a], &[]),
            Err(Error::InvalidArgument(_))
        ));
    }

    #[test]
    fn a_response_is_checked_like_an_http_one() {
        let body = response(&[fp32("o", &[1, 3], &[1.0, 9.0, 3.0])]);
        assert_eq!(
            check_response(&body, &want("o", &[None, Some(3)])).unwrap(),
            Some(1)
        );
        let wrong = [
            (want("x", &[None, Some(3)]), "missing"),
            (want("o", &[None, Some(4)]), "has shape"),
        ];
        for (expected, reason) in wrong {
            let err = check_response(&body, &expected).unwrap_err().to_string();
            assert!(err.contains(reason), "{err}");
        }
        let nan = response(&[fp32("o", &[1, 2], &[f32::NAN, 1.0])]);
        let err = check_response(&nan, &want("o", &[None, None])).unwrap_err();
        assert!(err.to_string().contains("NaN"), "{err}");
    }

    #[test]
    fn raw_contents_that_disagree_with_the_outputs_are_refused() {
        let mut msg =
            pb::ModelInferResponse::decode(response(&[fp32("o", &[1, 2], &[1.0, 2.0])])).unwrap();
        msg.raw_output_contents[0] = Bytes::from_static(&[0; 4]);
        let err =
            check_response(&msg.encode_to_vec().into(), &want("o", &[None, None])).unwrap_err();
        assert!(err.to_string().contains("do not match shape"), "{err}");
        msg.raw_output_contents.clear();
        let err =
            check_response(&msg.encode_to_vec().into(), &want("o", &[None, None])).unwrap_err();
        assert!(err.to_string().contains("1 outputs and 0 raw"), "{err}");
        msg.outputs[0].contents = Some(pb::InferTensorContents::default());
        let err = check_response(&msg.encode_to_vec().into(), &[]).unwrap_err();
        assert!(err.to_string().contains("typed tensor contents"), "{err}");
        msg.outputs[0].contents = None;
        msg.outputs[0].shape = vec![-1];
        msg.raw_output_contents = vec![Bytes::new()];
        let err = check_response(&msg.encode_to_vec().into(), &[]).unwrap_err();
        assert!(err.to_string().contains("negative"), "{err}");
    }

    #[test]
    fn decoded_outputs_are_the_bytes_sent() {
        let o = fp32("o", &[2], &[0.5, -1.0]);
        assert_eq!(
            decode_response(&response(std::slice::from_ref(&o))).unwrap(),
            vec![o]
        );
    }

    proptest! {
        #![proptest_config(crate::protocol::tensor::fuzz_config())]
        /// Whatever a server sends, checking it returns (no panic, no allocation from its sizes).
        #[test]
        fn any_bytes_are_judged_without_panic(body in prop::collection::vec(any::<u8>(), 0..512)) {
            let _ = check_response(&Bytes::from(body), &want("o", &[None]));
        }
    }
}
