//! What goes over the wire: tensors ([`tensor`]), Triton's KServe v2 JSON ([`triton`]), LitServe's
//! JSON ([`litserve`]), the streaming JSON walk both decode with ([`json_array`]) and the short
//! reasons a failure is reported with ([`reason`]), Server-Sent Events ([`sse`]), the generated
//! text of language models' answers ([`generative`]) and Triton's gRPC messages ([`grpc`]).

pub(crate) mod generative;
pub(crate) mod grpc;
pub(crate) mod json_array;
pub(crate) mod litserve;
pub(crate) mod py;
pub(crate) mod reason;
pub(crate) mod sse;
pub(crate) mod tensor;
pub(crate) mod triton;

pub(crate) use py::register;
