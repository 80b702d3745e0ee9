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

/// The request parameter asking Triton to mark a decoupled model's last response (an empty one
/// when the model sent its last with no flag): without it the end of a request is unknown.
pub const ASK_FINAL_RESPONSE: &str = "triton_enable_empty_final_response";
/// The response parameter marking a request's last response on `ModelStreamInfer`.
pub const FINAL_RESPONSE: &str = "triton_final_response";
/// The BYTES input and output of a text model (Triton's generate extension names them so).
pub const TEXT_INPUT: &str = "text_input";
pub const TEXT_OUTPUT: &str = "text_output";

/// The parameters of a request for `ModelStreamInfer`: the final-response flag asked for.
fn stream_parameters() -> std::collections::HashMap<String, pb::InferParameter> {
    std::iter::once((
        ASK_FINAL_RESPONSE.to_owned(),
        pb::InferParameter {
            parameter_choice: Some(pb::infer_parameter::ParameterChoice::BoolParam(true)),
        },
    ))
    .collect()
}

/// A `ModelInferRequest` for `model` (and `version`, empty: the server's choice) carrying
/// `inputs` as raw contents and asking for `output_names`; for `ModelStreamInfer` when `stream`
/// (asking for the final-response flag).
pub fn encode_infer_request(
    model: &str,
    version: &str,
    inputs: Vec<Tensor>,
    output_names: &[String],
    stream: bool,
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
        parameters: if stream {
            stream_parameters()
        } else {
            std::collections::HashMap::new()
        },
        ..Default::default()
    };
    Ok(request.encode_to_vec())
}

/// A `ModelStreamInfer` request for a text model from the JSON body the HTTP generate extension
/// takes: its `text_input` string becomes the BYTES input `text_input` of shape [1], every other
/// key a request parameter (a boolean, a whole number, a number or a string: gRPC's parameters
/// hold nothing else), as Triton's generate extension maps them.
pub fn encode_generate_request(model: &str, body: &[u8]) -> Result<Vec<u8>> {
    use pb::infer_parameter::ParameterChoice;
    let bad = |why: String| Error::InvalidArgument(format!("a gRPC generate request: {why}"));
    let fields: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(body).map_err(|e| bad(format!("not a JSON object ({e})")))?;
    let mut parameters = stream_parameters();
    let mut prompt = None;
    for (key, value) in fields {
        if key == TEXT_INPUT {
            match value {
                serde_json::Value::String(text) => prompt = Some(text),
                _ => return Err(bad(format!("{TEXT_INPUT} must be a string"))),
            }
            continue;
        }
        if key.starts_with("triton_") {
            return Err(bad(format!("{key:?} is a parameter Triton reserves")));
        }
        let choice = match &value {
            serde_json::Value::Bool(b) => ParameterChoice::BoolParam(*b),
            serde_json::Value::String(s) => ParameterChoice::StringParam(s.clone()),
            serde_json::Value::Number(n) => match (n.as_i64(), n.as_f64()) {
                (Some(i), _) => ParameterChoice::Int64Param(i),
                (None, Some(f)) => ParameterChoice::DoubleParam(f),
                (None, None) => return Err(bad(format!("{key:?} is out of range"))),
            },
            _ => {
                return Err(bad(format!(
                    "{key:?} is not a boolean, number or string (gRPC parameters hold no other)"
                )))
            }
        };
        parameters.insert(
            key,
            pb::InferParameter {
                parameter_choice: Some(choice),
            },
        );
    }
    let prompt = prompt.ok_or_else(|| bad(format!("no {TEXT_INPUT}")))?;
    let length = u32::try_from(prompt.len()).map_err(|_| bad("the prompt is over 4 GiB".into()))?;
    let mut raw = Vec::with_capacity(4 + prompt.len());
    raw.extend_from_slice(&length.to_le_bytes());
    raw.extend_from_slice(prompt.as_bytes());
    let request = pb::ModelInferRequest {
        model_name: model.to_owned(),
        inputs: vec![pb::model_infer_request::InferInputTensor {
            name: TEXT_INPUT.to_owned(),
            datatype: "BYTES".to_owned(),
            shape: vec![1],
            ..Default::default()
        }],
        outputs: vec![pb::model_infer_request::InferRequestedOutputTensor {
            name: TEXT_OUTPUT.to_owned(),
            ..Default::default()
        }],
        raw_input_contents: vec![Bytes::from(raw)],
        parameters,
        ..Default::default()
    };
    Ok(request.encode_to_vec())
}

/// The elements of a BYTES tensor's raw contents (each a 4-byte little-endian length and its
/// bytes), joined as text; an error when a length runs past the end.
fn bytes_elements(raw: &[u8], out: &mut String) -> Result<()> {
    let mut rest = raw;
    while !rest.is_empty() {
        let (head, tail) = rest
            .split_first_chunk::<4>()
            .ok_or_else(|| Error::protocol("a BYTES element's length is cut short"))?;
        let length = u32::from_le_bytes(*head) as usize;
        if length > tail.len() {
            return Err(Error::protocol(format!(
                "a BYTES element of {length} bytes runs past the {} left",
                tail.len()
            )));
        }
        out.push_str(&String::from_utf8_lossy(&tail[..length]));
        rest = &tail[length..];
    }
    Ok(())
}

/// The prompt in a generate request we encoded (the first element of its `text_input`).
pub fn generate_prompt(body: &[u8]) -> Option<String> {
    let request = pb::ModelInferRequest::decode(body).ok()?;
    let at = request.inputs.iter().position(|i| i.name == TEXT_INPUT)?;
    let mut text = String::new();
    bytes_elements(request.raw_input_contents.get(at)?, &mut text).ok()?;
    Some(text)
}

/// What one message of a `ModelStreamInfer` stream says.
#[derive(Debug, Default, PartialEq)]
pub struct StreamMessage {
    /// The server's `error_message`, when not empty.
    pub error: Option<String>,
    /// The response carries `triton_final_response` = true: the request's last.
    pub last: bool,
    /// The response's output tensors (0 for Triton's empty final response).
    pub outputs: usize,
    /// The text of its `text_output` BYTES output, if any.
    pub text: String,
}

/// Decodes a `ModelStreamInferResponse`.
pub fn decode_stream_message(body: &[u8]) -> Result<StreamMessage> {
    let message = pb::ModelStreamInferResponse::decode(body)
        .map_err(|e| Error::protocol(format!("response is not a ModelStreamInferResponse: {e}")))?;
    if !message.error_message.is_empty() {
        return Ok(StreamMessage {
            error: Some(message.error_message),
            ..StreamMessage::default()
        });
    }
    let response = message.infer_response.unwrap_or_default();
    let last = matches!(
        response
            .parameters
            .get(FINAL_RESPONSE)
            .and_then(|p| p.parameter_choice.as_ref()),
        Some(pb::infer_parameter::ParameterChoice::BoolParam(true))
    );
    let mut text = String::new();
    if let Some(at) = response.outputs.iter().position(|o| o.name == TEXT_OUTPUT) {
        let raw = response.raw_output_contents.get(at).ok_or_else(|| {
            Error::protocol(format!("output {TEXT_OUTPUT:?} has no raw contents"))
        })?;
        bytes_elements(raw, &mut text)?;
    }
    Ok(StreamMessage {
        error: None,
        last,
        outputs: response.outputs.len(),
        text,
    })
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

    use crate::protocol::tensor::fp32;

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
        let body = encode_infer_request("m", "2", vec![a.clone(), b.clone()], &["o".into()], false)
            .unwrap();
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
            encode_infer_request("m", "", vec![a], &[], false),
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

    #[test]
    fn a_generate_body_becomes_the_prompt_and_parameters_of_a_stream_request() {
        use pb::infer_parameter::ParameterChoice;
        let body = br#"{"text_input":"h\u00e9llo","max_tokens":7,"temperature":0.5,"ignore_eos":true,"stop":"x"}"#;
        let message = encode_generate_request("llm", body).unwrap();
        assert_eq!(generate_prompt(&message).as_deref(), Some("h\u{e9}llo"));
        let request = pb::ModelInferRequest::decode(&message[..]).unwrap();
        assert_eq!(request.model_name, "llm");
        assert_eq!(
            (
                request.inputs[0].datatype.as_str(),
                &request.inputs[0].shape[..]
            ),
            ("BYTES", &[1][..])
        );
        let choice = |key: &str| request.parameters[key].parameter_choice.clone().unwrap();
        assert_eq!(choice("max_tokens"), ParameterChoice::Int64Param(7));
        assert_eq!(choice("temperature"), ParameterChoice::DoubleParam(0.5));
        assert_eq!(choice("ignore_eos"), ParameterChoice::BoolParam(true));
        assert_eq!(choice("stop"), ParameterChoice::StringParam("x".into()));
        assert_eq!(choice(ASK_FINAL_RESPONSE), ParameterChoice::BoolParam(true));
        assert_eq!(request.outputs[0].name, TEXT_OUTPUT);
        for (bad, why) in [
            (
                &br#"{"text_input":"a","stop":["x"]}"#[..],
                "not a boolean, number or string",
            ),
            (
                br#"{"text_input":"a","triton_final_response":true}"#,
                "reserves",
            ),
            (br#"{"max_tokens":1}"#, "no text_input"),
            (br"[1]", "not a JSON object"),
        ] {
            let err = encode_generate_request("llm", bad).unwrap_err().to_string();
            assert!(err.contains(why), "{err}");
        }
    }

    #[test]
    fn a_stream_message_says_its_error_its_text_and_whether_it_is_the_last() {
        let mut response = pb::ModelInferResponse::decode(response(&[])).unwrap();
        let text = |parts: &[&str]| {
            let mut raw = Vec::new();
            for p in parts {
                raw.extend_from_slice(&(p.len() as u32).to_le_bytes());
                raw.extend_from_slice(p.as_bytes());
            }
            Bytes::from(raw)
        };
        response
            .outputs
            .push(pb::model_infer_response::InferOutputTensor {
                name: TEXT_OUTPUT.into(),
                datatype: "BYTES".into(),
                shape: vec![2],
                ..Default::default()
            });
        response.raw_output_contents.push(text(&["tok1 ", "tok2 "]));
        let message = |response: &pb::ModelInferResponse, error: &str| {
            pb::ModelStreamInferResponse {
                error_message: error.into(),
                infer_response: Some(response.clone()),
            }
            .encode_to_vec()
        };
        let read = decode_stream_message(&message(&response, "")).unwrap();
        assert_eq!(
            (read.outputs, read.text.as_str(), read.last),
            (1, "tok1 tok2 ", false)
        );
        response.parameters.insert(
            FINAL_RESPONSE.into(),
            pb::InferParameter {
                parameter_choice: Some(pb::infer_parameter::ParameterChoice::BoolParam(true)),
            },
        );
        assert!(decode_stream_message(&message(&response, "")).unwrap().last);
        let read = decode_stream_message(&message(&response, "boom")).unwrap();
        assert_eq!(read.error.as_deref(), Some("boom"));
        let mut cut = text(&["tok1 "]).to_vec();
        cut[0] = 9; // a length past the end
        response.raw_output_contents[0] = Bytes::from(cut);
        let err = decode_stream_message(&message(&response, "")).unwrap_err();
        assert!(err.to_string().contains("runs past"), "{err}");
    }

    /// A `ModelStatisticsResponse` with per-response statistics, as NVIDIA's own compiled protocol
    /// encodes it (tritonclient 2.73's `service_pb2`, deterministic serialisation): responses "0"
    /// and "1" each with compute_infer, compute_output, success and fail; response "2" with
    /// empty_response and cancel. Our protocol file must read it field for field.
    #[test]
    fn per_response_statistics_are_read_at_the_published_field_numbers() {
        const ENCODED: &str = "0a630a0570756c73651201312002280232060a04080210094a1a0a013012150a04080210641204\
                               0802100a1a05080210c80122004a1c0a013112170a040802106512040802100b1a05080210c9\
                               01220208014a110a0132120c2a0408021007320408011003";
        let bytes: Vec<u8> = (0..ENCODED.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&ENCODED[i..i + 2], 16).unwrap())
            .collect();
        let stats: pb::ModelStatisticsResponse = decode(Bytes::from(bytes), "statistics").unwrap();
        let model = &stats.model_stats[0];
        assert_eq!((model.name.as_str(), model.inference_count), ("pulse", 2));
        let d = |d: Option<pb::StatisticDuration>| d.map(|d| (d.count, d.ns)).unwrap_or_default();
        let r = &model.response_stats;
        assert_eq!(r.len(), 3);
        for (index, extra) in [("0", 0), ("1", 1)] {
            let s = &r[index];
            assert_eq!(d(s.compute_infer), (2, 100 + extra), "{index}");
            assert_eq!(d(s.compute_output), (2, 10 + extra), "{index}");
            assert_eq!(d(s.success), (2, 200 + extra), "{index}");
            assert_eq!(d(s.fail), (extra, 0), "{index}");
        }
        assert_eq!(d(r["2"].empty_response), (2, 7));
        assert_eq!(d(r["2"].cancel), (1, 3));
        assert_eq!(d(r["2"].success), (0, 0));
    }

    proptest! {
        #![proptest_config(crate::protocol::tensor::fuzz_config())]
        /// Whatever a server streams, reading it returns (no panic, no allocation from its sizes).
        #[test]
        fn any_stream_message_is_read_without_panic(body in prop::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode_stream_message(&body);
        }

        /// Whatever a server sends, checking it returns (no panic, no allocation from its sizes).
        #[test]
        fn any_bytes_are_judged_without_panic(body in prop::collection::vec(any::<u8>(), 0..512)) {
            let _ = check_response(&Bytes::from(body), &want("o", &[None]));
        }
    }
}
