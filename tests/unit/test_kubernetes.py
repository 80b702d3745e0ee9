"""The Kubernetes manifests in deploy/kubernetes: valid against the schemas of a pinned Kubernetes version
(offline, kubernetes-validate's bundled schemas), rendered by `kubectl kustomize`, and wired as intended:
the token's Secret reaches the workers only, workers find the master through its Service, ports agree,
every container has resources, and the pods run as the image's non-root user."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from dockerfile_parse import DockerfileParser
from support.runs import REPO_ROOT, clean_env

KUBERNETES_VERSION = "1.32"  # the kubectl client on the project's machines
MANIFESTS = REPO_ROOT / "deploy" / "kubernetes"
LOCUST = str(Path(sys.executable).parent / "locust")


def documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def kustomization() -> dict[str, Any]:
    return documents(MANIFESTS / "kustomization.yaml")[0]


def resources() -> list[dict[str, Any]]:
    return [doc for name in kustomization()["resources"] for doc in documents(MANIFESTS / name)]


def one(kind: str, component: str | None = None) -> dict[str, Any]:
    found = [
        r
        for r in resources()
        if r["kind"] == kind
        and (component is None or r["metadata"]["labels"].get("app.kubernetes.io/component") == component)
    ]
    assert len(found) == 1, (kind, component, [r["metadata"]["name"] for r in found])
    return found[0]


def container(deployment: dict[str, Any]) -> dict[str, Any]:
    (c,) = deployment["spec"]["template"]["spec"]["containers"]
    return c


def arg(c: dict[str, Any], option: str) -> str:
    values = [a.split("=", 1)[1] for a in c["args"] if a.startswith(f"{option}=")]
    assert len(values) == 1, (option, c["args"])
    return values[0]


def test_every_manifest_is_listed_and_valid_against_the_kubernetes_schemas() -> None:
    files = sorted(p.name for p in MANIFESTS.glob("*.yaml") if p.name != "kustomization.yaml")
    assert sorted(kustomization()["resources"]) == files
    for name in files:
        for doc in documents(MANIFESTS / name):
            # strict: unknown fields fail too; a kind without a schema raises instead of passing
            assert kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True) == KUBERNETES_VERSION, name


def test_kubectl_kustomize_renders_the_same_objects_valid_and_with_the_image_tag() -> None:
    kubectl = shutil.which("kubectl")
    assert kubectl, "kubectl (the client) is needed: apt-get install kubectl"
    rendered = subprocess.run(
        [kubectl, "kustomize", str(MANIFESTS)], capture_output=True, text=True, check=True, env=clean_env()
    )
    docs = [d for d in yaml.safe_load_all(rendered.stdout) if d]
    assert sorted((d["kind"], d["metadata"]["name"]) for d in docs) == sorted(
        (r["kind"], r["metadata"]["name"]) for r in resources()
    )
    (image,) = kustomization()["images"]
    for doc in docs:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        if doc["kind"] == "Deployment":
            assert container(doc)["image"] == f"{image['name']}:{image['newTag']}"
    version = re.search(r'^version = "(.+)"', (REPO_ROOT / "pyproject.toml").read_text(), re.MULTILINE)
    assert version and image["newTag"] == version.group(1), "the tag make image builds"


def test_the_token_secret_reaches_the_workers_environment_only() -> None:
    secret = one("Secret")
    name = secret["metadata"]["name"]
    referencing = [
        (r["kind"], r["metadata"]["labels"].get("app.kubernetes.io/component"))
        for r in resources()
        if r["kind"] != "Secret" and name in yaml.safe_dump(r)
    ]
    assert referencing == [("Deployment", "worker")]
    worker = container(one("Deployment", "worker"))
    from_secret = [e for e in worker["env"] if "secretKeyRef" in e.get("valueFrom", {})]
    assert from_secret == [
        {"name": "INFERENCE_AUTH_TOKEN", "valueFrom": {"secretKeyRef": {"name": name, "key": "token"}}}
    ]
    assert list(secret["stringData"]) == ["token"]
    master = one("Deployment", "master")
    assert "secret" not in yaml.safe_dump(master["spec"]["template"]).lower()


def test_workers_reach_the_master_through_its_service_on_the_ports_the_master_listens_on() -> None:
    service, master, worker = one("Service"), one("Deployment", "master"), one("Deployment", "worker")
    assert master["spec"]["replicas"] == 1
    master_labels = master["spec"]["template"]["metadata"]["labels"]
    worker_labels = worker["spec"]["template"]["metadata"]["labels"]
    selector = service["spec"]["selector"]
    assert selector.items() <= master_labels.items() and not selector.items() <= worker_labels.items()

    ports = {p["name"]: p for p in container(master)["ports"]}
    assert {p["name"]: (p["port"], p["targetPort"]) for p in service["spec"]["ports"]} == {
        "master": (5557, "master"),
        "web": (8089, "web"),
    }
    assert {name: p["containerPort"] for name, p in ports.items()} == {"master": 5557, "web": 8089}

    w = container(worker)
    assert "--worker" in w["args"] and "--master" not in w["args"]
    assert arg(w, "--master-host") == service["metadata"]["name"]
    assert int(arg(w, "--master-port")) == 5557
    assert "--master" in container(master)["args"]

    policy = one("NetworkPolicy")
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= master_labels.items()
    (to_master_port,) = [rule for rule in policy["spec"]["ingress"] if rule["ports"][0]["port"] == 5557]
    assert [f["podSelector"]["matchLabels"] for f in to_master_port["from"]] == [
        {k: worker_labels[k] for k in ("app.kubernetes.io/name", "app.kubernetes.io/component")}
    ]


def test_pods_have_resources_the_config_and_the_images_non_root_user() -> None:
    config = one("ConfigMap")
    image_user = DockerfileParser(path=str(REPO_ROOT / "Dockerfile")).structure
    (user,) = [i["value"] for i in image_user if i["instruction"] == "USER"]
    for component in ("master", "worker"):
        deployment = one("Deployment", component)
        pod = deployment["spec"]["template"]["spec"]
        c = container(deployment)
        for kind in ("cpu", "memory"):
            assert c["resources"]["requests"][kind], (component, kind)
            assert c["resources"]["limits"][kind], (component, kind)
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert f"{pod['securityContext']['runAsUser']}:{pod['securityContext']['runAsGroup']}" == user
        assert c["securityContext"]["allowPrivilegeEscalation"] is False
        (volume,) = pod["volumes"]
        assert volume["configMap"]["name"] == config["metadata"]["name"]
        (mount,) = c["volumeMounts"]
        assert mount["name"] == volume["name"]
        key = Path(arg(c, "--config")).relative_to(mount["mountPath"])
        assert str(key) in config["data"], (component, key)


def test_the_config_is_one_locust_accepts_with_the_images_locustfile(tmp_path: Path) -> None:
    conf = one("ConfigMap")["data"]["locust.conf"]
    envs = DockerfileParser(path=str(REPO_ROOT / "Dockerfile")).envs
    locustfile = re.search(r"^locustfile = (.+)$", conf, re.MULTILINE)
    assert locustfile and locustfile.group(1) == envs["LOCUST_LOCUSTFILE"]
    # Locust refuses unknown keys in a config file, so listing the users checks every key.
    here = tmp_path / "locust.conf"
    here.write_text(conf.replace(locustfile.group(1), str(REPO_ROOT / "locustfile.py")))
    listed = subprocess.run(
        [LOCUST, "--config", str(here), "--list"], capture_output=True, text=True, env=clean_env(), timeout=120
    )
    assert listed.returncode == 0, listed.stderr[-2000:]
    class_name = re.search(r"^class-name = (\w+)$", conf, re.MULTILINE)
    assert class_name and class_name.group(1) in listed.stdout.split()


def test_the_validator_rejects_what_kubernetes_would() -> None:
    # The schemas catch a misspelt field and a wrong type, so the passes above mean something.
    deployment = one("Deployment", "worker")
    misspelt = yaml.safe_load(yaml.safe_dump(deployment))
    misspelt["spec"]["replica"] = misspelt["spec"].pop("replicas")
    wrong_type = yaml.safe_load(yaml.safe_dump(deployment))
    wrong_type["spec"]["template"]["spec"]["containers"][0]["ports"] = [{"containerPort": "5557"}]
    for broken in (misspelt, wrong_type):
        with pytest.raises(kubernetes_validate.ValidationError):
            kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)
