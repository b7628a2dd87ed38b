"""Where and how a training run starts: a local subprocess (or torchrun) or a Kubernetes pod, through Dagster Pipes.

Nothing here changes what a run computes, so none of it is part of the run's identity: a run killed under one
launcher resumes when another relaunches it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import dagster as dg

from common.bounds import Range, ranged_field

# GPUs one pod asks for, and processes torchrun starts on one node (one per GPU): no node holds more than 16.
K8S_GPUS = Range(1, 16, "GPUs of one node")
NPROC = Range(1, 16, "processes on one node, one per GPU")


class Toleration(dg.Config):
    """A Kubernetes toleration, e.g. key=nvidia.com/gpu, operator=Exists, effect=NoSchedule."""

    key: str
    operator: str = "Exists"
    value: str = ""
    effect: str = "NoSchedule"


class LaunchConfig(dg.Config):
    launcher: str = "subprocess"  # or "k8s"
    k8s_image: str = "aesthetic-pipeline:latest"
    k8s_namespace: str = "dagster"
    k8s_gpus: int = ranged_field(1, K8S_GPUS, "GPUs the pod asks for")
    # PersistentVolumeClaim holding $AESTHETIC_HOME, mounted at the same path in the pod: the command line
    # names shards, runs and parent checkpoints by their absolute paths under it. Required with launcher k8s.
    k8s_pvc_claim: str = ""
    k8s_node_selector: dict[str, str] = {}
    k8s_tolerations: list[Toleration] = []


def k8s_pod_spec(config: LaunchConfig, command: list[str], aesthetic_home: str) -> dict[str, Any]:
    """The pod spec PipesK8sClient launches: one container asking for GPUs, pinned by selector and tolerations,
    with the shared $AESTHETIC_HOME volume mounted where the command's paths point."""
    if not config.k8s_pvc_claim:
        raise ValueError(
            "launcher k8s needs k8s_pvc_claim: the PersistentVolumeClaim holding AESTHETIC_HOME "
            f"({aesthetic_home}), which the pod mounts at the same path (the training command reads shards and "
            "writes runs by absolute paths under it)"
        )
    container = {
        "name": "nima-train",
        "image": config.k8s_image,
        # The local interpreter's path means nothing in the image: use the image's python.
        "command": ["python", *command[1:]] if Path(command[0]).name.startswith("python") else command,
        # The worker name the operator gave the launching host, so the model card says which pool trained it.
        "env": [{"name": "AESTHETIC_HOME", "value": aesthetic_home},
                *([{"name": "AESTHETIC_WORKER", "value": os.environ["AESTHETIC_WORKER"]}]
                  if os.environ.get("AESTHETIC_WORKER") else [])],
        "resources": {"limits": {"nvidia.com/gpu": str(config.k8s_gpus)}},
        "volumeMounts": [{"name": "aesthetic-home", "mountPath": aesthetic_home}],
    }
    spec: dict[str, Any] = {
        "restartPolicy": "Never", "containers": [container],
        "volumes": [{"name": "aesthetic-home", "persistentVolumeClaim": {"claimName": config.k8s_pvc_claim}}],
    }
    if config.k8s_node_selector:
        spec["nodeSelector"] = dict(config.k8s_node_selector)
    if config.k8s_tolerations:
        spec["tolerations"] = [{k: v for k, v in t.model_dump().items() if v} for t in config.k8s_tolerations]
    return spec


def launch(context: dg.AssetExecutionContext, config: LaunchConfig, command: list[str],
           aesthetic_home: str) -> dict[str, Any]:
    """Run the training out of process through Pipes; return the summary it reported."""
    if config.launcher == "k8s":
        spec = k8s_pod_spec(config, command, aesthetic_home)  # before the import: config errors first
        from dagster_k8s import PipesK8sClient  # only needed on a cluster

        invocation = PipesK8sClient().run(context=context, namespace=config.k8s_namespace,
                                          base_pod_spec=spec, image=config.k8s_image)
    elif config.launcher == "subprocess":
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        invocation = dg.PipesSubprocessClient().run(command=command, context=context, env=env,
                                                    cwd=str(Path(__file__).resolve().parents[1]))
    else:
        raise ValueError(f"launcher must be 'subprocess' or 'k8s', got {config.launcher!r}")
    messages = invocation.get_custom_messages()
    return messages[-1] if messages else {}
