"""The Kubernetes samples parse and carry what the README promises (no live cluster here)."""

from pathlib import Path

import yaml

SAMPLES = Path(__file__).resolve().parents[3] / "samples" / "profiling"


def docs(name):
    return {d["kind"]: d for d in yaml.safe_load_all((SAMPLES / name).read_text()) if d}


def test_pyroscope_manifest_has_deployment_service_and_storage():
    kinds = docs("pyroscope.yaml")
    assert set(kinds) == {"PersistentVolumeClaim", "Deployment", "Service"}
    svc = kinds["Service"]
    assert svc["metadata"]["name"] == "pyroscope" and svc["spec"]["ports"][0]["port"] == 4040
    pod = kinds["Deployment"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"].startswith("grafana/pyroscope:")
    assert container["resources"]["requests"] and container["resources"]["limits"]
    claim = {v["name"]: v for v in pod["volumes"]}["data"]["persistentVolumeClaim"]["claimName"]
    assert claim == kinds["PersistentVolumeClaim"]["metadata"]["name"]
    assert (
        svc["spec"]["selector"].items()
        <= kinds["Deployment"]["spec"]["template"]["metadata"]["labels"].items()
    )


def test_engine_snippet_sets_profiling_env():
    (container,) = docs("engine-deployment.yaml")["Deployment"]["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["AIBRIX_KV_CACHE_OL_PROFILING_ENABLED"] == "1"
    assert env["AIBRIX_KV_CACHE_OL_PROFILING_SERVER_ADDRESS"] == "http://pyroscope.<ns>.svc:4040"
