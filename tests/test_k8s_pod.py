"""The pod that `launcher: k8s` submits, checked against the Kubernetes API's own models without a cluster (issue
29, point 7): the client drops keys it does not know without a word, so a round trip that gives back exactly the
pod we wrote is the check that every key (GPU limits, node selector, tolerations, the shared volume) is one
Kubernetes reads."""

from __future__ import annotations

import json

from dagster_k8s.pipes import build_pod_body
from kubernetes.client import ApiClient

from assets.launch import LaunchConfig, Toleration, k8s_pod_spec

HOME = "/data/aesthetic"
CONFIG = LaunchConfig(launcher="k8s", k8s_image="reg/aesthetic:1", k8s_gpus=2, k8s_pvc_claim="aesthetic-home",
                      k8s_node_selector={"cloud.google.com/gke-accelerator": "nvidia-h100-80gb"},
                      k8s_tolerations=[Toleration(key="nvidia.com/gpu")])
COMMAND = ["/venv/bin/python", "-m", "nima_train.train", "--data", f"{HOME}/shards/ava/train"]


class _Response:
    """What ApiClient.deserialize reads: an HTTP response body."""

    def __init__(self, body: dict) -> None:
        self.data = json.dumps(body)


def _round_trip(body: dict, kind: str) -> dict:
    client = ApiClient()
    return client.sanitize_for_serialization(client.deserialize(_Response(body), kind))


def test_the_pod_spec_survives_the_kubernetes_models_unchanged(monkeypatch):
    monkeypatch.setenv("AESTHETIC_WORKER", "gpu-pool")
    spec = k8s_pod_spec(CONFIG, COMMAND, HOME)
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "nima-train-run"}, "spec": spec}
    assert _round_trip(pod, "V1Pod") == pod
    (container,) = spec["containers"]
    assert container["resources"]["limits"] == {"nvidia.com/gpu": "2"}
    assert {"name": "AESTHETIC_WORKER", "value": "gpu-pool"} in container["env"]
    assert spec["nodeSelector"] and spec["tolerations"] and spec["volumes"][0]["persistentVolumeClaim"]


def test_a_misspelt_key_is_what_the_round_trip_catches():
    spec = k8s_pod_spec(CONFIG, COMMAND, HOME)
    spec["nodeSelecter"] = spec.pop("nodeSelector")
    assert _round_trip(spec, "V1PodSpec") != spec


def test_what_pipes_k8s_client_submits_keeps_every_key_of_our_spec():
    """PipesK8sClient.run(base_pod_spec=spec, image=...) builds the pod with build_pod_body: our keys all reach
    it, with the Pipes bootstrap variables added to the container's environment."""
    spec = k8s_pod_spec(CONFIG, COMMAND, HOME)
    bootstrap = {"DAGSTER_PIPES_CONTEXT": "e30=", "DAGSTER_PIPES_MESSAGES": "e30="}
    submitted = ApiClient().sanitize_for_serialization(
        build_pod_body("nima-train-run", CONFIG.k8s_image, None, bootstrap, None, spec))
    assert _round_trip(submitted, "V1Pod") == submitted
    (container,) = submitted["spec"]["containers"]
    assert container["env"][-2:] == [{"name": k, "value": v} for k, v in bootstrap.items()]
    container["env"] = container["env"][:-2]
    assert submitted["spec"] == spec
