"""GPU stages as Kubernetes Jobs: the GPU work pool's base job template, and the Job manifest the
Prefect Kubernetes worker would submit for a stage's job variables, all checked offline.

The template (``infra/k8s/gpu-job-template.json``) is Prefect's own default Kubernetes template
(``KubernetesWorker.get_default_base_job_template()``) with the pool's additions applied by
``build_gpu_job_template``: the GPU, CPU, memory and /dev/shm of the pod, GPU node placement, the
DVC remote's credentials from a Secret by reference, and a fixed ``backoffLimit`` of 0. Deriving
it from the stock template keeps every stock variable, so a prefect-kubernetes upgrade that
changes the stock template shows up as a difference (``python -m mrt_lib.k8s_jobs check``).

``render_job_manifest`` goes through the worker's own code (``from_template_and_values`` and
``prepare_for_flow_run``) with no Prefect server. prefect-kubernetes and kubernetes-validate are
imported inside the functions, so the rest of the project does not need them.
"""

from __future__ import annotations

import copy
import json
import sys
import uuid
from pathlib import Path
from typing import Any

from mrt_lib.config.sections import CPU_QUANTITY, MEMORY_QUANTITY  # the quantities params' `resources` accept

REPO = Path(__file__).resolve().parents[1]
TEMPLATE_PATH = REPO / "infra" / "k8s" / "gpu-job-template.json"
K8S_VERSION = "1.30"  # the oldest Kubernetes minor checked against (tests add the newest kubernetes-validate has)
SHM_VOLUME = "dshm"

DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"  # a Secret's name

TOLERATION = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "key": {"type": "string"},
        "operator": {"enum": ["Exists", "Equal"]},
        "value": {"type": "string"},
        "effect": {"enum": ["NoSchedule", "PreferNoSchedule", "NoExecute"]},
        "tolerationSeconds": {"type": "integer"},
    },
}

# the variables this pool adds to the stock ones (the names are the stage job-variable contract)
ADDED_VARIABLES: dict[str, dict[str, Any]] = {
    "gpus": {"title": "GPUs", "type": "integer", "minimum": 0, "default": 1,
             "description": "The container's nvidia.com/gpu limit (the request equals it). 0 renders a limit of 0: "
                            "the pod gets no GPU but is still placed by node_selector and tolerations."},
    "cpu": {"title": "CPU", "type": "string", "pattern": CPU_QUANTITY, "default": "4",
            "description": "CPU request and limit of the container (a Kubernetes quantity, e.g. '8' or '500m')."},
    "memory": {"title": "Memory", "type": "string", "pattern": MEMORY_QUANTITY, "default": "16Gi",
               "description": "Memory request and limit of the container (a Kubernetes quantity, e.g. '64Gi'). "
                              "/dev/shm pages count against it."},
    "shm_size": {"title": "Shared memory size", "type": "string", "pattern": MEMORY_QUANTITY, "default": "8Gi",
                 "description": "sizeLimit of the memory-backed emptyDir mounted at /dev/shm (NCCL and DataLoader "
                                "workers need more than the runtime's 64 MB)."},
    "node_selector": {"title": "Node selector", "type": "object", "additionalProperties": {"type": "string"},
                      "default": {"nvidia.com/gpu.present": "true"},
                      "description": "The pod's nodeSelector. The default is the label NVIDIA GPU Feature Discovery "
                                     "(GPU Operator) puts on GPU nodes; managed clusters have their own."},
    "tolerations": {"title": "Tolerations", "type": "array", "items": TOLERATION,
                    "default": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
                    "description": "The pod's tolerations: by default the nvidia.com/gpu NoSchedule taint of GPU "
                                   "node pools."},
    "dvc_secret_name": {"title": "DVC remote Secret", "type": "string", "pattern": DNS_SUBDOMAIN,
                        "default": "mrt-dvc-remote",
                        "description": "The Secret in the job namespace whose keys become the container's environment "
                                       "(envFrom): AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and optionally "
                                       "AWS_ENDPOINT_URL and AWS_DEFAULT_REGION for the S3 DVC remote."},
}

# stock variables whose schema this pool changes (merged over the stock entry; None removes a stock key)
CHANGED_VARIABLES: dict[str, dict[str, Any]] = {
    "namespace": {"default": "mrt"},
    "image": {"anyOf": None, "type": "string", "default": None,
              "description": "The stage image, tagged by commit (REGISTRY/mrt-pipeline:<commit>). Required: without "
                             "it the worker would run the stock Prefect image, which lacks the project."},
    "backoff_limit": {"maximum": 0,
                      "description": "Fixed at 0: a stage is retried by the orchestrator (idempotency keys), never "
                                     "by Kubernetes behind Prefect's back; on eviction Prefect reschedules the run."},
    "finished_job_ttl": {"default": 3600},
    "pod_watch_timeout_seconds": {"default": 900,
                                  "description": "Long enough for a GPU node to scale up and pull the image. "
                                                 "prefect-kubernetes 0.8 accepts it but its worker no longer "
                                                 "watches pods (its observer reports pod states instead)."},
}
# stock variables this pool replaces with cpu/memory (requests = limits): only null is accepted
SUPERSEDED = {"cpu_request": "cpu", "cpu_limit": "cpu", "memory_request": "memory", "memory_limit": "memory"}


def stock_base_job_template() -> dict:
    """Prefect's default base job template for a ``kubernetes`` work pool (installed version)."""
    from prefect_kubernetes.worker import KubernetesWorker

    return KubernetesWorker.get_default_base_job_template()


def _variables(stock: dict) -> dict:
    """The stock variables schema with this pool's changes and additions."""
    variables = copy.deepcopy(stock)
    props = variables["properties"]
    for name, change in CHANGED_VARIABLES.items():
        props[name] = {k: v for k, v in {**props[name], **change}.items() if v is not None}
    for name, replacement in SUPERSEDED.items():
        props[name] = {"title": props[name].get("title", name), "type": "null", "default": None,
                       "description": f"Not used by this pool: set '{replacement}' (request and limit alike)."}
    props.update(copy.deepcopy(ADDED_VARIABLES))
    variables["required"] = sorted({*variables.get("required", []), "image"})
    variables["description"] = "Variables of the mrt-gpu pool: the stock Kubernetes ones plus the stage resources."
    return variables


def _job_manifest(stock: dict) -> dict:
    """The stock Job manifest with the GPU pod's resources, placement, /dev/shm and Secret.

    ``completions`` and ``parallelism`` stay where the stock template has them (the pod spec):
    the worker's own manifest check requires them there (see ``strict_manifest``)."""
    manifest = copy.deepcopy(stock)
    pod = manifest["spec"]["template"]["spec"]
    pod.update(nodeSelector="{{ node_selector }}", tolerations="{{ tolerations }}",
               automountServiceAccountToken=False,  # a stage talks to Prefect and MLflow, never to the API server
               volumes=[{"name": SHM_VOLUME, "emptyDir": {"medium": "Memory", "sizeLimit": "{{ shm_size }}"}}])
    container = pod["containers"][0]
    container["resources"] = {"requests": {"cpu": "{{ cpu }}", "memory": "{{ memory }}"},
                              "limits": {"cpu": "{{ cpu }}", "memory": "{{ memory }}", "nvidia.com/gpu": "{{ gpus }}"}}
    container["volumeMounts"] = [{"name": SHM_VOLUME, "mountPath": "/dev/shm"}]
    container["envFrom"] = [{"secretRef": {"name": "{{ dvc_secret_name }}"}}]
    return manifest


def build_gpu_job_template(stock: dict | None = None) -> dict:
    """The GPU pool's base job template: ``stock`` (default: the installed prefect-kubernetes's)
    with this pool's variables and Job manifest."""
    stock = copy.deepcopy(stock if stock is not None else stock_base_job_template())
    job_configuration = stock["job_configuration"]
    job_configuration["job_manifest"] = _job_manifest(job_configuration["job_manifest"])
    return {"job_configuration": job_configuration, "variables": _variables(stock["variables"])}


def template_text(template: dict) -> str:
    """The template file's exact text (what ``write`` writes and ``check`` compares)."""
    return json.dumps(template, indent=2) + "\n"


def load_base_job_template(path: str | Path | None = None) -> dict:
    """The base job template at ``path`` (default: the repository's infra/k8s/gpu-job-template.json)."""
    return json.loads(Path(path or TEMPLATE_PATH).read_text())


def validate_job_variables(base_job_template: dict, job_variables: dict) -> None:
    """Refuse job variables the pool's variables schema does not admit, the way the Prefect server
    does when a flow run of a deployment is created (the pool's defaults under the variables,
    required ones enforced); raises Prefect's ``ValidationError``."""
    from prefect.utilities.schema_tools.validation import validate

    schema = base_job_template["variables"]
    defaults = {k: v["default"] for k, v in schema.get("properties", {}).items() if "default" in v}
    validate({**defaults, **job_variables}, schema, raise_on_error=True, preprocess=True, ignore_required=False,
             allow_none_with_default=True)


class _NoServer:
    """Stands in for the Prefect client while rendering: the template must not refer to blocks or
    Prefect variables, which would need a server. Any use says so instead of connecting."""

    def __getattr__(self, name: str):
        raise RuntimeError(f"rendering is offline, but the template needs the Prefect API ({name}): "
                           "it refers to a block or a Prefect variable")


def render_job_manifest(base_job_template: dict, job_variables: dict, flow_run_name: str = "mrt-stage-run",
                        flow_run_id: uuid.UUID | None = None, check_variables: bool = True) -> dict:
    """The Job manifest the Prefect Kubernetes worker would submit for a flow run with these job
    variables: ``KubernetesWorkerJobConfiguration.from_template_and_values`` then
    ``prepare_for_flow_run``, as the worker's ``resolve_for_flow_run`` does, for a FlowRun built
    here. The worker's settings go into the pod's environment, so this process's Prefect settings
    appear there. ``check_variables``: refuse them first, as the server would at flow-run creation."""
    from prefect.client.schemas.objects import FlowRun
    from prefect.utilities.asyncutils import run_coro_as_sync
    from prefect_kubernetes.worker import KubernetesWorkerJobConfiguration

    if check_variables:
        validate_job_variables(base_job_template, job_variables)
    configuration = run_coro_as_sync(KubernetesWorkerJobConfiguration.from_template_and_values(
        base_job_template=base_job_template, values=copy.deepcopy(job_variables), client=_NoServer()))
    flow_run = FlowRun(id=flow_run_id or uuid.uuid4(), name=flow_run_name, flow_id=uuid.uuid4())
    configuration.prepare_for_flow_run(flow_run)
    return copy.deepcopy(configuration.job_manifest)


def strict_manifest(manifest: dict) -> dict:
    """A copy of ``manifest`` that a strict schema validator accepts, with the same meaning on a cluster.

    Prefect's stock template (and so this one) puts ``completions: 1`` and ``parallelism: 1`` in
    the pod spec (``spec.template.spec``). They are JobSpec fields (``spec.completions``,
    ``spec.parallelism``); the PodSpec has no such fields, so a strict validator refuses them.
    They cannot simply be moved in the template: the worker's manifest check
    (``KubernetesWorkerJobConfiguration._validate_job_manifest``, a JSON patch against its base
    manifest) requires them in the pod spec with value 1. On a cluster the API server drops them
    (its default field validation, Warn, only warns about unknown fields), and a Job without them
    runs one pod to one completion: exactly what 1 and 1 ask for. So here they are moved to the
    JobSpec, unless the JobSpec already sets them (then the pod-spec copies, which the server
    would drop, are dropped)."""
    manifest = copy.deepcopy(manifest)
    spec = manifest["spec"]
    pod = spec["template"]["spec"]
    for key in ("completions", "parallelism"):
        if key in pod:
            spec.setdefault(key, pod.pop(key))
    return manifest


def validate_manifest(manifest: dict, k8s_version: str = K8S_VERSION) -> str:
    """Validate ``manifest`` strictly (unknown fields refused) against Kubernetes ``k8s_version``'s
    schema with kubernetes-validate's Python API (its command line needs ``metadata.name`` and
    fails on a Job with ``generateName`` only). Returns the schema version used; raises
    ``kubernetes_validate.ValidationError``. A rendered Job needs ``strict_manifest`` first."""
    import kubernetes_validate

    return kubernetes_validate.validate(manifest, k8s_version, strict=True)


def main(argv: list[str] | None = None) -> int:
    """``python -m mrt_lib.k8s_jobs write|check``: rebuild infra/k8s/gpu-job-template.json from the
    installed prefect-kubernetes's stock template, or check the file is what that rebuild gives."""
    args = sys.argv[1:] if argv is None else argv
    if args not in (["write"], ["check"]):
        print("usage: python -m mrt_lib.k8s_jobs write|check", file=sys.stderr)
        return 2
    text = template_text(build_gpu_job_template())
    if args == ["write"]:
        TEMPLATE_PATH.write_text(text)
        print(f"wrote {TEMPLATE_PATH.relative_to(REPO)}")
        return 0
    if TEMPLATE_PATH.read_text() != text:
        print(f"{TEMPLATE_PATH.relative_to(REPO)} differs from the stock template plus this pool's changes: "
              "python -m mrt_lib.k8s_jobs write, then review the diff", file=sys.stderr)
        return 1
    print(f"{TEMPLATE_PATH.relative_to(REPO)} is the stock template plus this pool's changes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
