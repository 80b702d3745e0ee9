"""Tests of the real test servers (Triton via PyTriton, LitServe) and the locally built models."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import struct
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import onnx
import pytest
import requests
import tritonclient.http as triton_http

from servers import children
from servers.launch import (
    REPO_ROOT,
    RunningServer,
    ServerStartError,
    free_ports,
    litserve_server,
    live_group_members,
    python_envs,
    triton_leftovers,
    triton_server,
)
from servers.models import MODELS, checksum_words, load_predictor, onnx_path

pytestmark = pytest.mark.timeout(300)

IMAGE_SHAPE = [1, 3, 224, 224]


def random_image(seed: int, batch: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((batch, 3, 224, 224), dtype=np.float32)


def triton_infer_binary(http: requests.Session, srv: RunningServer, model: str, x: np.ndarray) -> np.ndarray:
    """KServe v2 infer with the binary tensor extension, built by hand (input and output as raw bytes)."""
    spec = MODELS[model]
    raw = np.ascontiguousarray(x, dtype="<f4").tobytes()
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": spec.input_name,
                    "shape": list(x.shape),
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": len(raw)},
                }
            ],
            "outputs": [{"name": spec.output_name, "parameters": {"binary_data": True}}],
        }
    ).encode()
    resp = http.post(
        f"{srv.url}/v2/models/{model}/infer",
        data=header + raw,
        headers={
            "Inference-Header-Content-Length": str(len(header)),
            "Content-Type": "application/octet-stream",
        },
        timeout=60,
    )
    resp.raise_for_status()
    json_len = int(resp.headers["Inference-Header-Content-Length"])
    meta = json.loads(resp.content[:json_len])
    (output,) = meta["outputs"]
    assert output["name"] == spec.output_name and output["datatype"] == "FP32"
    return np.frombuffer(resp.content[json_len:], dtype="<f4").reshape(output["shape"])


# ----------------------------------------------------------------------------------------------------------
# models (no server)
# ----------------------------------------------------------------------------------------------------------
def test_checksum_words_matches_independent_sha256() -> None:
    x = random_image(1)
    digest = hashlib.sha256(x.astype("<f4").tobytes()).digest()
    assert checksum_words(x) == list(struct.unpack(">16H", digest))
    assert checksum_words(x[0]) == checksum_words(x)


@pytest.mark.parametrize(("graph", "model"), [("tiny", "tiny_onnx"), ("resnet50", "resnet50_onnx")])
def test_onnx_graph_signature(graph: str, model: str) -> None:
    proto = onnx.load(str(onnx_path(graph)), load_external_data=False)
    (inp,) = proto.graph.input
    (out,) = proto.graph.output
    assert (inp.name, out.name) == (MODELS[model].input_name, MODELS[model].output_name)
    dims = [d.dim_param or d.dim_value for d in inp.type.tensor_type.shape.dim]
    assert dims[0] and isinstance(dims[0], str) and dims[1:] == [3, 224, 224]
    assert inp.type.tensor_type.elem_type == onnx.TensorProto.FLOAT


# ----------------------------------------------------------------------------------------------------------
# Triton
# ----------------------------------------------------------------------------------------------------------
def test_triton_metadata_tiny(triton: RunningServer, http: requests.Session) -> None:
    meta = http.get(f"{triton.url}/v2/models/tiny_onnx", timeout=10).json()
    assert meta["inputs"] == [{"name": "input__0", "datatype": "FP32", "shape": [-1, 3, 224, 224]}]
    assert meta["outputs"] == [{"name": "output__0", "datatype": "FP32", "shape": [-1, 1000]}]


@pytest.mark.parametrize("model", ["resnet50_onnx", "checksum", "sleep_20ms"])
def test_triton_metadata_names(triton: RunningServer, http: requests.Session, model: str) -> None:
    meta = http.get(f"{triton.url}/v2/models/{model}", timeout=10).json()
    spec = MODELS[model]
    assert [(t["name"], t["shape"]) for t in meta["inputs"]] == [(spec.input_name, [-1, 3, 224, 224])]
    assert [(t["name"], t["shape"]) for t in meta["outputs"]] == [(spec.output_name, [-1, 1000])]


def test_triton_health_and_config(triton: RunningServer, http: requests.Session) -> None:
    assert http.get(f"{triton.url}/v2/health/live", timeout=10).status_code == 200
    assert http.get(f"{triton.url}/v2/health/ready", timeout=10).status_code == 200
    config = http.get(f"{triton.url}/v2/models/sleep_20ms/config", timeout=10).json()
    assert config["max_batch_size"] >= 64
    assert "dynamic_batching" in config


def test_triton_checksum_binary_tritonclient(triton: RunningServer) -> None:
    x = random_image(7, batch=2)
    client = triton_http.InferenceServerClient(f"127.0.0.1:{triton.port}")
    try:
        inp = triton_http.InferInput("INPUT", list(x.shape), "FP32")
        inp.set_data_from_numpy(x, binary_data=True)
        out = triton_http.InferRequestedOutput("CHECKSUM", binary_data=True)
        result = client.infer("checksum", [inp], outputs=[out]).as_numpy("CHECKSUM")
    finally:
        client.close()
    assert result.shape == (2, 1000) and result.dtype == np.float32
    for i in range(2):
        assert result[i, :16].astype(int).tolist() == checksum_words(x[i])
        assert not result[i, 16:].any()


def test_triton_checksum_json(triton: RunningServer, http: requests.Session) -> None:
    x = random_image(8)
    body = {
        "inputs": [{"name": "INPUT", "shape": IMAGE_SHAPE, "datatype": "FP32", "data": x.ravel().tolist()}],
        "outputs": [{"name": "CHECKSUM"}],
    }
    resp = http.post(f"{triton.url}/v2/models/checksum/infer", json=body, timeout=60)
    resp.raise_for_status()
    (output,) = resp.json()["outputs"]
    assert output["shape"] == [1, 1000]
    assert [int(v) for v in output["data"][:16]] == checksum_words(x)


def test_triton_checksum_manual_binary(triton: RunningServer, http: requests.Session) -> None:
    x = random_image(9)
    out = triton_infer_binary(http, triton, "checksum", x)
    assert out[0, :16].astype(int).tolist() == checksum_words(x)


def test_triton_resnet50_finite(triton: RunningServer, http: requests.Session) -> None:
    out = triton_infer_binary(http, triton, "resnet50_onnx", random_image(10))
    assert out.shape == (1, 1000)
    assert np.isfinite(out).all()


def test_triton_tiny_matches_local_onnxruntime(triton: RunningServer, http: requests.Session) -> None:
    x = random_image(11, batch=3)
    out = triton_infer_binary(http, triton, "tiny_onnx", x)
    np.testing.assert_allclose(out, load_predictor("tiny_onnx", threads=1)(x), rtol=1e-5, atol=1e-6)


def test_triton_sleep_concurrent_requests(triton: RunningServer) -> None:
    x = random_image(12)

    def one(_: int) -> np.ndarray:
        with requests.Session() as session:
            session.trust_env = False
            return triton_infer_binary(session, triton, "sleep_20ms", x)

    with ThreadPoolExecutor(max_workers=10) as pool:
        outputs = list(pool.map(one, range(10)))
    assert len(outputs) == 10
    for out in outputs:
        assert out.shape == (1, 1000) and not out.any()


# ----------------------------------------------------------------------------------------------------------
# LitServe
# ----------------------------------------------------------------------------------------------------------
def test_litserve_checksum(litserve_checksum: RunningServer, http: requests.Session) -> None:
    x = random_image(20)
    resp = http.post(f"{litserve_checksum.url}/predict", json={"input": x.tolist()}, timeout=60)
    resp.raise_for_status()
    out = np.asarray(resp.json()["output"], dtype=np.float32)
    assert out.shape == (1, 1000)
    assert out[0, :16].astype(int).tolist() == checksum_words(x)
    assert not out[0, 16:].any()


def test_litserve_checksum_two_items(litserve_checksum: RunningServer, http: requests.Session) -> None:
    x = random_image(21, batch=2)
    resp = http.post(f"{litserve_checksum.url}/predict", json={"input": x.tolist()}, timeout=60)
    resp.raise_for_status()
    out = np.asarray(resp.json()["output"], dtype=np.float32)
    assert [out[i, :16].astype(int).tolist() for i in range(2)] == [
        checksum_words(x[0]),
        checksum_words(x[1]),
    ]


def test_litserve_rejects_bad_shape(litserve_checksum: RunningServer, http: requests.Session) -> None:
    resp = http.post(f"{litserve_checksum.url}/predict", json={"input": [[1.0, 2.0]]}, timeout=30)
    assert resp.status_code == 400
    assert "expected [N,3,224,224]" in resp.text


def test_litserve_tiny(litserve_tiny: RunningServer, http: requests.Session) -> None:
    assert http.get(f"{litserve_tiny.url}/health", timeout=10).status_code == 200
    x = random_image(22)
    resp = http.post(f"{litserve_tiny.url}/predict", json={"input": x.tolist()}, timeout=60)
    resp.raise_for_status()
    out = np.asarray(resp.json()["output"], dtype=np.float32)
    assert out.shape == (1, 1000)
    np.testing.assert_allclose(out, load_predictor("tiny_onnx", threads=1)(x), rtol=1e-5, atol=1e-6)


def test_litserve_sleep_concurrent_then_group_is_gone() -> None:
    x = random_image(23).tolist()
    with litserve_server(model="sleep_20ms") as server:

        def one(_: int) -> list:
            with requests.Session() as session:
                session.trust_env = False
                resp = session.post(f"{server.url}/predict", json={"input": x}, timeout=60)
                resp.raise_for_status()
                return resp.json()["output"]

        with ThreadPoolExecutor(max_workers=10) as pool:
            outputs = list(pool.map(one, range(10)))
        pgid = server.pid
    assert all(np.asarray(out).shape == (1, 1000) for out in outputs)
    assert live_group_members(pgid) == []  # zombies may linger until PID 1 reaps them


# ----------------------------------------------------------------------------------------------------------
# launch helpers
# ----------------------------------------------------------------------------------------------------------
def test_free_ports_distinct() -> None:
    ports = free_ports(5)
    assert len(set(ports)) == 5 and all(1024 <= p <= 65535 for p in ports)


def test_start_failure_reports_log_tail(tmp_path: Path) -> None:
    log = tmp_path / "litserve.log"
    with (
        pytest.raises(ServerStartError, match="exited early") as info,
        litserve_server(model="no_such_model", log_path=log),
    ):
        pass
    assert "invalid choice" in str(info.value)
    assert str(log) in str(info.value)


def test_server_exits_when_launcher_dies(tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    script = (
        "import time\n"
        "from servers.launch import litserve_server\n"
        f"with litserve_server('checksum', log_path={str(log)!r}) as srv:\n"
        "    print(srv.pid, srv.tmp_dir, flush=True)\n"
        "    time.sleep(600)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    cmd = [sys.executable, "-c", script]
    launcher = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        assert launcher.stdout is not None
        line = launcher.stdout.readline().decode()
    finally:
        launcher.kill()  # no cleanup runs in the launcher: the server must notice and exit by itself
        launcher.wait()
        if launcher.stdout is not None:
            launcher.stdout.close()
    assert line, f"launcher failed; server log:\n{log.read_text() if log.exists() else ''}"
    pgid, tmp_dir = int(line.split()[0]), Path(line.split()[1])
    deadline = time.monotonic() + 60
    while live_group_members(pgid) and time.monotonic() < deadline:
        time.sleep(0.2)
    shutil.rmtree(tmp_dir, ignore_errors=True)  # the killed launcher could not remove it
    assert live_group_members(pgid) == []


def test_killed_triton_leaves_no_temp_files() -> None:
    """SIGKILL the whole server group, so nothing in it cleans up: the launcher must, including what
    tritonserver writes outside its private TMPDIR (/tmp/folderXXXXXX, /tmp/python_env_XXXXXX, /dev/shm)."""
    envs_before = python_envs()
    with triton_server(models=["tiny_onnx"]) as srv:
        running = triton_leftovers(srv.tmp_dir, srv.pid)
        new_envs = python_envs() - envs_before  # others' too, if another Triton started meanwhile
        children.kill_group(srv.pid)
    assert any(p.name.startswith("folder") for p in running), running
    assert any(p.name.startswith(f"pytrtion{srv.pid}-") for p in running), running
    if len(new_envs) == 1:  # then it is this server's: claimed, so found
        assert new_envs <= set(running), (new_envs, running)
    assert [p for p in running if p.exists()] == []
    assert triton_leftovers(srv.tmp_dir, srv.pid) == []
    assert not srv.tmp_dir.exists()
