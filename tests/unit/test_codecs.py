"""The Python face of the codecs: Triton binary/JSON requests and responses, LitServe JSON."""

from __future__ import annotations

import json

import numpy as np
import pytest
from locust_inference import (
    ProtocolError,
    check_litserve_response,
    decode_triton_response,
    encode_litserve_request,
    encode_triton_request,
    parse_model_metadata,
)

DTYPES = {
    "FP32": np.float32,
    "FP16": np.float16,
    "FP64": np.float64,
    "INT32": np.int32,
    "INT64": np.int64,
    "UINT8": np.uint8,
    "INT8": np.int8,
    "BOOL": np.bool_,
}


def response_for(request_body: bytes, header_length: int) -> tuple[bytes, int]:
    """Echoes a binary request's input back as a response output, the way Triton lays it out."""
    header = json.loads(request_body[:header_length])
    inp = header["inputs"][0]
    out_header = json.dumps(
        {
            "model_name": "echo",
            "outputs": [
                {
                    "name": "echo",
                    "datatype": inp["datatype"],
                    "shape": inp["shape"],
                    "parameters": {"binary_data_size": inp["parameters"]["binary_data_size"]},
                }
            ],
        }
    ).encode()
    return out_header + request_body[header_length:], len(out_header)


@pytest.mark.parametrize("datatype", list(DTYPES))
def test_binary_round_trip(datatype: str) -> None:
    rng = np.random.default_rng(1)
    tensor = (rng.standard_normal((2, 3, 4)) * 50).astype(DTYPES[datatype])
    body, header_length = encode_triton_request(tensor, "in", ["out"])
    assert header_length is not None
    header = json.loads(body[:header_length])
    assert header["inputs"][0] == {
        "name": "in",
        "shape": [2, 3, 4],
        "datatype": datatype,
        "parameters": {"binary_data_size": tensor.nbytes},
    }
    assert header["outputs"] == [{"name": "out", "parameters": {"binary_data": True}}]
    assert body[header_length:] == tensor.astype(tensor.dtype.newbyteorder("<")).tobytes()
    decoded = decode_triton_response(*response_for(body, header_length))
    np.testing.assert_array_equal(decoded["echo"], tensor)
    assert decoded["echo"].dtype == tensor.dtype and decoded["echo"].flags.writeable


def test_non_contiguous_and_big_endian_inputs_are_sent_little_endian() -> None:
    base = np.arange(24, dtype=">f4").reshape(4, 6)[:, ::2]
    body, hl = encode_triton_request(base, "in", [])
    assert body[hl:] == np.ascontiguousarray(base, dtype="<f4").tobytes()


def test_json_mode_keeps_float32_exact() -> None:
    tensor = np.random.default_rng(2).standard_normal((1, 3, 8, 8)).astype(np.float32)
    body, header_length = encode_triton_request(tensor, "x", ["x.45"], binary=False)
    assert header_length is None
    request = json.loads(body)
    assert request["outputs"] == [{"name": "x.45", "parameters": {"binary_data": False}}]
    data = np.array(request["inputs"][0]["data"], dtype=np.float32).reshape(tensor.shape)
    np.testing.assert_array_equal(data, tensor)


def test_decodes_plain_json_response() -> None:
    body = json.dumps(
        {"outputs": [{"name": "o", "datatype": "INT64", "shape": [2, 2], "data": [1, -2, 3, 4]}]}
    ).encode()
    out = decode_triton_response(body, None)
    np.testing.assert_array_equal(out["o"], np.array([[1, -2], [3, 4]], dtype=np.int64))


TRUNCATED_HEADER = b'{"outputs":[{"name":"o","datatype":"FP32","shape":[2],"parameters":{"binary_data_size":8}}]}'


@pytest.mark.parametrize(
    ("body", "header_length", "reason"),
    [
        (b'{"outputs":[]}', 100, "past the end"),
        (b"not json", None, "not valid"),
        (b'{"outputs":[{"name":"o","datatype":"STRING","shape":[1],"data":[1]}]}', None, "datatype"),
        (b'{"outputs":[{"name":"o","datatype":"FP32","shape":[3],"data":[1,2]}]}', None, "do not match"),
        (TRUNCATED_HEADER + b"\x00\x00", len(TRUNCATED_HEADER), "truncated"),
    ],
)
def test_inconsistent_responses_raise_protocol_error(body: bytes, header_length: int | None, reason: str) -> None:
    with pytest.raises(ProtocolError, match=reason):
        decode_triton_response(body, header_length)


def test_unsupported_dtype_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="complex"):
        encode_triton_request(np.zeros(2, dtype=np.complex64), "x", [])


def test_metadata() -> None:
    meta = parse_model_metadata(
        b'{"name":"m","versions":["1"],"platform":"p","inputs":[{"name":"x","datatype":"FP32","shape":[-1,3]}],'
        b'"outputs":[{"name":"x.45","datatype":"FP32","shape":[-1,1000]}]}'
    )
    assert meta["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [-1, 3]}]
    assert meta["outputs"][0]["name"] == "x.45"
    with pytest.raises(ProtocolError):
        parse_model_metadata(b'{"name":"m"}')


def test_litserve_request_is_shortest_round_tripping_json() -> None:
    tensor = np.random.default_rng(3).standard_normal((1, 3, 5, 7)).astype(np.float32)
    tensor[0, 0, 0, :3] = [0.1, 1e-8, -0.0]
    body = encode_litserve_request(tensor)
    assert body.startswith(b'{"input":[[[[0.1,1e-8,-0.0,')
    parsed = np.asarray(json.loads(body)["input"], dtype=np.float32)
    assert parsed.shape == tensor.shape
    assert parsed.tobytes() == tensor.tobytes()
    # shortest: no value needs more than 9 significant digits for float32
    numbers = body.decode().replace("[", ",").replace("]", ",").split(",")
    assert max(len(n.lstrip("-").replace(".", "").split("e")[0].lstrip("0")) for n in numbers if n[-1:].isdigit()) <= 9


def test_litserve_request_rejects_non_float32_and_non_finite() -> None:
    with pytest.raises(TypeError):
        encode_litserve_request(np.zeros((1, 2), dtype=np.float64))
    with pytest.raises(ValueError, match="not finite"):
        encode_litserve_request(np.array([np.inf], dtype=np.float32))


def test_litserve_response_check() -> None:
    assert check_litserve_response(b'{"output":[[0.1,0.7,0.2]]}', [1, 3]) == 1
    assert check_litserve_response(b'{"output":[[0.1,0.7,0.2]]}', [-1, -1]) == 1
    with pytest.raises(ProtocolError, match='no "output"'):
        check_litserve_response(b'{"prediction":[1]}')
    with pytest.raises(ProtocolError, match="shape"):
        check_litserve_response(b'{"output":[[1,2]]}', [1, 3])
