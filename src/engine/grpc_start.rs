//! Triton's gRPC calls made at start, before any user runs (as `http_request` is for HTTP): model
//! metadata, readiness and statistics. Each blocks the calling thread without the GIL, on the
//! runtime's thread, and returns `(code, message, value)`: the gRPC status code (0: OK) with the
//! server's message, and the answer in the shape the HTTP path gives Python. A failure under the
//! call (no server, a timeout, a certificate) raises, as `http_request` does.

use bytes::Bytes;
use prost::Message;
use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::engine::endpoint::{header_map, parse_url, timeout, DEFAULT_MAX_RESPONSE_BYTES};
use crate::engine::runtime;
use crate::error::Error;
use crate::protocol::grpc::{self, pb};
use crate::protocol::triton::{ModelMetadata, TensorSpec};
use crate::transport::{Body, ClientConfig, RequestSpec, Transport};

/// The answer of one unary call: the response message, or the status code and message.
type Answer = std::result::Result<Bytes, (i32, String)>;

/// What every start-up call takes.
struct Call<'a> {
    host: &'a str,
    headers: Vec<(String, String)>,
    timeout: f64,
    insecure: bool,
    ca_file: Option<std::path::PathBuf>,
}

impl Call<'_> {
    /// Calls `method` of the service with `request`, blocking without the GIL.
    fn unary(&self, py: Python<'_>, method: &str, request: Vec<u8>) -> PyResult<Answer> {
        let url = format!(
            "{}/inference.GRPCInferenceService/{method}",
            self.host.trim_end_matches('/')
        );
        let spec = RequestSpec {
            method: reqwest::Method::POST,
            url: parse_url(&url)?,
            headers: header_map(&self.headers)?,
            bodies: vec![Body::new(Bytes::from(request))],
            timeout: timeout(self.timeout)?,
            max_response_bytes: DEFAULT_MAX_RESPONSE_BYTES,
        };
        let config = ClientConfig {
            insecure: self.insecure,
            ca_file: self.ca_file.clone(),
        };
        let transport = Transport::grpc(&spec, &config, 1, None)?;
        let rt = runtime::runtime()?;
        let task = rt.spawn(async move {
            match transport.send(&spec, 0).await {
                Ok(response) => Ok(Ok(response.body)),
                Err(failure) => match failure.error {
                    Error::Grpc { code, excerpt, .. } => Ok(Err((code, excerpt))),
                    other => Err(other),
                },
            }
        });
        let answer = py
            .detach(|| rt.block_on(task))
            .map_err(|e| Error::Internal {
                url,
                reason: if e.is_panic() {
                    runtime::panic_message(e.into_panic().as_ref())
                } else {
                    "the request was cancelled".into()
                },
            })??;
        Ok(answer)
    }
}

/// The result Python gets: `(code, message, value)`, `value` `None` unless the code is 0.
type Reply<'py> = (i32, String, Option<Bound<'py, PyAny>>);

fn reply<'py>(
    answer: Answer,
    value: impl FnOnce(Bytes) -> PyResult<Bound<'py, PyAny>>,
) -> PyResult<Reply<'py>> {
    match answer {
        Ok(body) => Ok((0, String::new(), Some(value(body)?))),
        Err((code, message)) => Ok((code, message, None)),
    }
}

/// Defines the start-up call `$name`: a Python function of the signature every start-up call shares,
/// `$name(host, model, *, version="", headers=[], timeout=10.0, insecure=False, ca_file=None) ->
/// (code, message, value | None)`, asking `$method` with `$request` (a message naming the model and
/// version) and making the value of the answer with `$value(py, body)`.
macro_rules! start_call {
    ($(#[$doc:meta])* $name:ident, $method:literal, $request:ident, $value:expr) => {
        $(#[$doc])*
        #[pyfunction]
        #[allow(clippy::too_many_arguments)] // the keyword arguments of the Python signature
        #[pyo3(signature = (host, model, *, version = "", headers = Vec::new(), timeout = 10.0, insecure = false, ca_file = None))]
        pub fn $name<'py>(
            py: Python<'py>,
            host: &str,
            model: &str,
            version: &str,
            headers: Vec<(String, String)>,
            timeout: f64,
            insecure: bool,
            ca_file: Option<std::path::PathBuf>,
        ) -> PyResult<Reply<'py>> {
            let call = Call {
                host,
                headers,
                timeout,
                insecure,
                ca_file,
            };
            let request = pb::$request {
                name: model.to_owned(),
                version: version.to_owned(),
            };
            let answer = call.unary(py, $method, request.encode_to_vec())?;
            reply(answer, |body| $value(py, body))
        }
    };
}

start_call!(
    /// `grpc_model_metadata(...) -> (code, message, dict | None)`: the dict as
    /// `parse_model_metadata` makes it.
    grpc_model_metadata,
    "ModelMetadata",
    ModelMetadataRequest,
    metadata
);
start_call!(
    /// `grpc_model_ready(...) -> (code, message, bool | None)`.
    grpc_model_ready,
    "ModelReady",
    ModelReadyRequest,
    |py: Python<'py>, body: Bytes| -> PyResult<Bound<'py, PyAny>> {
        let ready: pb::ModelReadyResponse = grpc::decode(body, "the model readiness")?;
        Ok(pyo3::types::PyBool::new(py, ready.ready)
            .to_owned()
            .into_any())
    }
);
start_call!(
    /// `grpc_model_statistics(...) -> (code, message, dict | None)`: the model's first entry as the
    /// HTTP statistics give it (`inference_count`, `execution_count`, `inference_stats` with each
    /// phase's `count` and `ns`, `response_stats` by response index).
    grpc_model_statistics,
    "ModelStatistics",
    ModelStatisticsRequest,
    statistics
);

start_call!(
    /// `grpc_model_config(...) -> (code, message, dict | None)`: the part of the model's
    /// configuration read (`name`, `platform`, and for an ensemble `ensemble_scheduling` with
    /// each step's `model_name` and `model_version`) in the shape of the HTTP configuration.
    grpc_model_config,
    "ModelConfig",
    ModelConfigRequest,
    config
);

/// The model configuration's name, platform and ensemble steps, as the HTTP configuration has them.
fn config(py: Python<'_>, body: Bytes) -> PyResult<Bound<'_, PyAny>> {
    let answer: pb::ModelConfigResponse = grpc::decode(body, "the model configuration")?;
    let config = answer
        .config
        .ok_or_else(|| Error::protocol("the model configuration holds no configuration"))?;
    let out = PyDict::new(py);
    out.set_item("name", &config.name)?;
    out.set_item("platform", &config.platform)?;
    if let Some(ensemble) = config.ensemble_scheduling {
        let steps = pyo3::types::PyList::empty(py);
        for step in ensemble.step {
            let d = PyDict::new(py);
            d.set_item("model_name", step.model_name)?;
            d.set_item("model_version", step.model_version)?;
            steps.append(d)?;
        }
        let scheduling = PyDict::new(py);
        scheduling.set_item("step", steps)?;
        out.set_item("ensemble_scheduling", scheduling)?;
    }
    Ok(out.into_any())
}

/// The model metadata as `parse_model_metadata` makes it.
fn metadata(py: Python<'_>, body: Bytes) -> PyResult<Bound<'_, PyAny>> {
    let meta: pb::ModelMetadataResponse = grpc::decode(body, "the model metadata")?;
    let specs = |specs: Vec<pb::model_metadata_response::TensorMetadata>| {
        specs
            .into_iter()
            .map(|s| TensorSpec {
                name: s.name,
                datatype: s.datatype,
                shape: s.shape,
            })
            .collect()
    };
    let meta = ModelMetadata {
        name: meta.name,
        platform: meta.platform,
        versions: meta.versions,
        inputs: specs(meta.inputs),
        outputs: specs(meta.outputs),
    }
    .checked()?;
    Ok(crate::protocol::py::triton::metadata_dict(py, &meta)?.into_any())
}

/// The model's first statistics entry, in the shape of the HTTP statistics: with a decoupled
/// model's `response_stats` (each response index's phases), when Triton reports them.
fn statistics(py: Python<'_>, body: Bytes) -> PyResult<Bound<'_, PyAny>> {
    let stats: pb::ModelStatisticsResponse = grpc::decode(body, "the model statistics")?;
    let model = stats
        .model_stats
        .first()
        .ok_or_else(|| Error::protocol("the model statistics name no model"))?;
    let inference = model.inference_stats.unwrap_or_default();
    let phases = durations(
        py,
        [
            ("success", inference.success),
            ("fail", inference.fail),
            ("queue", inference.queue),
            ("compute_input", inference.compute_input),
            ("compute_infer", inference.compute_infer),
            ("compute_output", inference.compute_output),
        ],
    )?;
    let responses = PyDict::new(py);
    for (index, r) in &model.response_stats {
        let r = durations(
            py,
            [
                ("compute_infer", r.compute_infer),
                ("compute_output", r.compute_output),
                ("success", r.success),
                ("fail", r.fail),
                ("empty_response", r.empty_response),
                ("cancel", r.cancel),
            ],
        )?;
        responses.set_item(index, r)?;
    }
    let out = PyDict::new(py);
    out.set_item("name", &model.name)?;
    out.set_item("version", &model.version)?;
    out.set_item("inference_count", model.inference_count)?;
    out.set_item("execution_count", model.execution_count)?;
    out.set_item("inference_stats", phases)?;
    out.set_item("response_stats", responses)?;
    Ok(out.into_any())
}

/// `{name: {"count": ..., "ns": ...}}`, as the HTTP statistics give each phase (zeros when absent).
fn durations<'py, const N: usize>(
    py: Python<'py>,
    phases: [(&str, Option<pb::StatisticDuration>); N],
) -> PyResult<Bound<'py, PyDict>> {
    let out = PyDict::new(py);
    for (name, duration) in phases {
        let duration = duration.unwrap_or_default();
        let d = PyDict::new(py);
        d.set_item("count", duration.count)?;
        d.set_item("ns", duration.ns)?;
        out.set_item(name, d)?;
    }
    Ok(out)
}
