"""The Kubernetes side of the GPU stages (infra/k8s/, mrt_lib/k8s_jobs.py), checked offline: no
cluster, no container engine, no Prefect server.

Each GPU stage's job variables go through the Prefect Kubernetes worker's own rendering, and the
Job it would submit is validated against the Kubernetes API schema with unknown fields refused;
so is every other manifest in infra/k8s/. The template must keep every stock variable, refuse bad
job variables the way the Prefect server does, and nothing in infra/ may hold a secret value or
an image digest.
"""

import copy
import json
import os
import re
from pathlib import Path

import click
import kubernetes_validate
import pytest
import yaml
from prefect.utilities.schema_tools.validation import ValidationError

from mrt_lib import k8s_jobs

REPO = Path(__file__).resolve().parents[1]
INFRA = REPO / "infra"
K8S = INFRA / "k8s"
IMAGE = "ghcr.io/owner/mrt-pipeline:0123abc"
TRACKING = "http://mlflow.mrt.svc.cluster.local:5000"
VERSIONS = [k8s_jobs.K8S_VERSION, ".".join(kubernetes_validate.latest_version().split(".")[:2])]  # oldest, newest

# the stage job variables of the contract (params.yaml `resources`): one GPU, a full 8-GPU node, a CPU stage
STAGES = {
    "train_base": {"gpus": 1, "cpu": "8", "memory": "64Gi", "shm_size": "8Gi", "processes": 1},
    "rl_round": {"gpus": 8, "cpu": "64", "memory": "512Gi", "shm_size": "64Gi", "processes": 8},
    "evaluate": {"gpus": 1, "cpu": "8", "memory": "32Gi", "shm_size": "8Gi", "processes": 1},
    "build_dataset": {"gpus": 0, "cpu": "2", "memory": "8Gi", "shm_size": "1Gi", "processes": 1},
}


def job_variables(resources: dict, image: str = IMAGE) -> dict:
    """What the orchestrator sends for a stage: its resources, the image and the run's environment."""
    return {"image": image, "gpus": resources["gpus"], "cpu": resources["cpu"], "memory": resources["memory"],
            "shm_size": resources["shm_size"],
            "env": {"MRT_TRACKING_URI": TRACKING, "MRT_PROCESSES": str(resources["processes"])}}


@pytest.fixture(scope="module")
def template() -> dict:
    return k8s_jobs.load_base_job_template()


def container(manifest: dict) -> dict:
    return manifest["spec"]["template"]["spec"]["containers"][0]


def pod(manifest: dict) -> dict:
    return manifest["spec"]["template"]["spec"]


# --- the template -------------------------------------------------------------------------------

def test_the_template_file_is_the_stock_template_plus_this_pools_changes():
    """Fails when the file was edited by hand or prefect-kubernetes changed its stock template
    (then: python -m mrt_lib.k8s_jobs write, and review the diff)."""
    assert K8S.joinpath("gpu-job-template.json").read_text() == k8s_jobs.template_text(
        k8s_jobs.build_gpu_job_template())
    assert k8s_jobs.main(["check"]) == 0
    assert k8s_jobs.main(["neither"]) == 2


def test_the_template_keeps_every_stock_variable_and_configuration_key(template):
    stock = k8s_jobs.stock_base_job_template()
    assert set(stock["variables"]["properties"]) <= set(template["variables"]["properties"])
    assert set(stock["job_configuration"]) == set(template["job_configuration"])
    assert set(k8s_jobs.ADDED_VARIABLES) <= set(template["variables"]["properties"])


def test_prefect_accepts_the_template(template):
    """The checks the Prefect server runs when the pool is created (every placeholder declared,
    the variables a valid JSON schema)."""
    from prefect.server.schemas.actions import validate_base_job_template
    from prefect.utilities.schema_tools.validation import is_valid_schema

    validate_base_job_template(template)
    is_valid_schema(template["variables"], preprocess=False)
    undeclared = copy.deepcopy(template)
    container(undeclared["job_configuration"]["job_manifest"])["workingDir"] = "{{ working_dir }}"
    with pytest.raises(ValueError, match="working_dir"):
        validate_base_job_template(undeclared)


def test_the_pool_defaults_are_the_cluster_admins(template):
    props = template["variables"]["properties"]
    assert props["namespace"]["default"] == "mrt"
    assert props["node_selector"]["default"] == {"nvidia.com/gpu.present": "true"}
    assert props["tolerations"]["default"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    assert props["dvc_secret_name"]["default"] == "mrt-dvc-remote"
    assert props["backoff_limit"]["default"] == 0 == props["backoff_limit"]["maximum"]
    assert props["pod_watch_timeout_seconds"]["default"] >= 900
    assert props["finished_job_ttl"]["default"] == 3600
    assert props["stream_output"]["default"] is True
    assert "image" in template["variables"]["required"]


# --- the stage Jobs -----------------------------------------------------------------------------

@pytest.mark.parametrize("stage", sorted(STAGES))
def test_a_stage_job_is_what_its_variables_ask_for(stage, template):
    resources = STAGES[stage]
    manifest = k8s_jobs.render_job_manifest(template, job_variables(resources), flow_run_name=f"{stage}-run")
    c, p = container(manifest), pod(manifest)
    assert c["resources"]["limits"] == {"cpu": resources["cpu"], "memory": resources["memory"],
                                        "nvidia.com/gpu": resources["gpus"]}
    assert c["resources"]["requests"] == {"cpu": resources["cpu"], "memory": resources["memory"]}
    assert p["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in p["tolerations"]
    shm = [v for v in p["volumes"] if v["name"] == k8s_jobs.SHM_VOLUME]
    assert shm == [{"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": resources["shm_size"]}}]
    assert {"name": "dshm", "mountPath": "/dev/shm"} in c["volumeMounts"]
    assert c["image"] == IMAGE and c["imagePullPolicy"] == "IfNotPresent"
    assert manifest["spec"]["backoffLimit"] == 0
    assert manifest["spec"]["ttlSecondsAfterFinished"] == 3600
    assert manifest["metadata"]["namespace"] == "mrt"
    assert manifest["metadata"]["generateName"] == f"{stage.replace('_', '-')}-run-"
    assert c["envFrom"] == [{"secretRef": {"name": "mrt-dvc-remote"}}]
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert env["MRT_TRACKING_URI"] == TRACKING and env["MRT_PROCESSES"] == str(resources["processes"])
    assert env["PREFECT_FLOW_RUN_EXECUTE_SIGTERM_BEHAVIOR"] == "reschedule"  # the worker's answer to backoff 0
    assert not {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} & set(env)  # only through the Secret
    assert c["args"] == ["prefect", "flow-run", "execute"]
    assert p["restartPolicy"] == "Never" and p["automountServiceAccountToken"] is False
    for version in VERSIONS:
        assert k8s_jobs.validate_manifest(k8s_jobs.strict_manifest(manifest), version) == version


def test_every_stage_of_the_params_renders_and_validates(template):
    """The repository's own ``resources`` section (every stage, and the default), when it has one."""
    resources = yaml.safe_load((REPO / "params.yaml").read_text()).get("resources")
    if not resources:
        pytest.skip("params.yaml has no resources section")
    for stage, res in {"default": resources["default"], **resources.get("stages", {})}.items():
        res = {**resources["default"], **res}
        manifest = k8s_jobs.render_job_manifest(template, job_variables(res), flow_run_name=stage)
        assert container(manifest)["resources"]["limits"]["nvidia.com/gpu"] == res["gpus"], stage
        k8s_jobs.validate_manifest(k8s_jobs.strict_manifest(manifest))


def test_the_worker_merges_env_and_keeps_the_pool_defaults(template):
    variables = job_variables(STAGES["evaluate"])
    variables.update(node_selector={"cloud.google.com/gke-accelerator": "nvidia-h100-80gb"}, tolerations=[],
                     dvc_secret_name="team-dvc")
    manifest = k8s_jobs.render_job_manifest(template, variables)
    assert pod(manifest)["nodeSelector"] == {"cloud.google.com/gke-accelerator": "nvidia-h100-80gb"}
    assert pod(manifest)["tolerations"] == []
    assert container(manifest)["envFrom"] == [{"secretRef": {"name": "team-dvc"}}]


# --- completions / parallelism --------------------------------------------------------------------

def test_the_raw_job_is_refused_strictly_for_completions_and_parallelism_in_the_pod_spec(template):
    manifest = k8s_jobs.render_job_manifest(template, job_variables(STAGES["train_base"]))
    assert pod(manifest)["completions"] == 1 == pod(manifest)["parallelism"]
    with pytest.raises(kubernetes_validate.ValidationError, match="completions.*parallelism|parallelism.*completions"):
        k8s_jobs.validate_manifest(manifest)
    kubernetes_validate.validate(manifest, k8s_jobs.K8S_VERSION, strict=False)  # only unknown fields are wrong
    fixed = k8s_jobs.strict_manifest(manifest)
    assert (fixed["spec"]["completions"], fixed["spec"]["parallelism"]) == (1, 1)
    assert not {"completions", "parallelism"} & set(pod(fixed))
    assert "completions" in pod(manifest)  # the input is left as it was


def test_the_worker_requires_them_in_the_pod_spec(template):
    """Why the template keeps them where they are: without them the worker refuses the manifest."""
    broken = copy.deepcopy(template)
    for key in ("completions", "parallelism"):
        pod(broken["job_configuration"]["job_manifest"]).pop(key)
    with pytest.raises(ValueError, match="missing required attributes"):
        k8s_jobs.render_job_manifest(broken, job_variables(STAGES["train_base"]))


def test_strict_manifest_keeps_what_the_job_spec_already_says(template):
    manifest = k8s_jobs.render_job_manifest(template, job_variables(STAGES["train_base"]))
    manifest["spec"]["completions"] = 2
    fixed = k8s_jobs.strict_manifest(manifest)
    assert fixed["spec"]["completions"] == 2 and fixed["spec"]["parallelism"] == 1
    assert "completions" not in pod(fixed)


# --- job variables the pool refuses ---------------------------------------------------------------

@pytest.mark.parametrize("bad", [
    {"gpus": -1}, {"gpus": "1"}, {"gpus": 1.5}, {"cpu": 8}, {"cpu": "eight"}, {"memory": "32m"}, {"memory": "32GB"},
    {"shm_size": "lots"}, {"backoff_limit": 1}, {"cpu_request": "2"}, {"memory_limit": "8Gi"},
    {"env": {"MRT_PROCESSES": 8}}, {"node_selector": {"gpu": True}}, {"tolerations": [{"operator": "Maybe"}]},
    {"dvc_secret_name": "Not_A_Name"}, {"image": None},
], ids=lambda bad: json.dumps(bad))
def test_a_bad_job_variable_is_refused(bad, template):
    variables = {**job_variables(STAGES["train_base"]), **bad}
    with pytest.raises(ValidationError, match=next(iter(bad))):
        k8s_jobs.validate_job_variables(template, variables)
    with pytest.raises(ValidationError):
        k8s_jobs.render_job_manifest(template, variables)


def test_a_run_without_an_image_is_refused(template):
    variables = job_variables(STAGES["train_base"])
    variables.pop("image")
    with pytest.raises(ValidationError, match="'image' is a required property"):
        k8s_jobs.validate_job_variables(template, variables)


def test_good_job_variables_pass(template):
    k8s_jobs.validate_job_variables(template, {**job_variables(STAGES["rl_round"]), "cpu": "500m", "memory": "1.5Gi"})


def test_rendering_never_reaches_for_a_server(template):
    with_block = copy.deepcopy(template)
    container(with_block["job_configuration"]["job_manifest"])["workingDir"] = "{{ prefect.variables.workdir }}"
    with pytest.raises(RuntimeError, match="offline"):
        k8s_jobs.render_job_manifest(with_block, job_variables(STAGES["train_base"]))


# --- the other manifests ----------------------------------------------------------------------

def manifests() -> list[tuple[str, dict]]:
    """Every Kubernetes object (a YAML document with a ``kind``) in infra/k8s/."""
    found = []
    for path in sorted(K8S.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if isinstance(doc, dict) and "kind" in doc:
                found.append((f"{path.name}:{doc['kind']}/{doc['metadata']['name']}", doc))
    return found


def containers(doc: dict) -> list[dict]:
    """The containers of a workload's pod template (none for other kinds)."""
    return doc.get("spec", {}).get("template", {}).get("spec", {}).get("containers", [])


def test_the_manifests_are_found():
    assert sorted(name for name, _ in manifests()) == [
        "mlflow.yaml:Deployment/mlflow", "mlflow.yaml:Service/mlflow", "namespace.yaml:Namespace/mrt",
        "secret.example.yaml:Secret/mrt-dvc-remote", "secret.example.yaml:Secret/mrt-mlflow"]


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("name, doc", manifests(), ids=[n for n, _ in manifests()])
def test_every_manifest_validates_strictly(name, doc, version):
    assert k8s_jobs.validate_manifest(doc, version) == version


def test_strict_validation_refuses_a_misspelt_field():
    deployment = copy.deepcopy(dict(manifests())["mlflow.yaml:Deployment/mlflow"])
    deployment["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {"periodSeconds": 10}
    with pytest.raises(kubernetes_validate.ValidationError, match="readinesProbe"):
        k8s_jobs.validate_manifest(deployment)


def test_every_secret_reference_names_a_key_of_the_example_secrets(template):
    secrets = {doc["metadata"]["name"]: set(doc["stringData"]) for _, doc in manifests() if doc["kind"] == "Secret"}
    refs = [e["valueFrom"]["secretKeyRef"] for _, doc in manifests() for c in containers(doc)
            for e in c.get("env", []) if "secretKeyRef" in e.get("valueFrom", {})]
    assert refs and all(r["key"] in secrets[r["name"]] for r in refs)
    assert template["variables"]["properties"]["dvc_secret_name"]["default"] in secrets
    assert {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} <= secrets["mrt-dvc-remote"]


# --- MLflow, against the installed mlflow -------------------------------------------------------

def mlflow_container() -> dict:
    return dict(manifests())["mlflow.yaml:Deployment/mlflow"]["spec"]["template"]["spec"]["containers"][0]


def test_the_mlflow_server_arguments_parse_and_the_stores_come_from_the_secret(monkeypatch):
    """``mlflow server`` of the installed mlflow parses the container's arguments, and takes the
    backend and artifact stores from the environment the Secret fills."""
    from mlflow.cli import server

    c = mlflow_container()
    env_names = {e["name"] for e in c["env"]}
    monkeypatch.setenv("MLFLOW_BACKEND_STORE_URI", "postgresql://u:p@db:5432/mlflow")
    monkeypatch.setenv("MLFLOW_ARTIFACTS_DESTINATION", "s3://bucket/mlflow")
    ctx = server.make_context("server", list(c["args"]))
    assert ctx.params["backend_store_uri"] == "postgresql://u:p@db:5432/mlflow"
    assert ctx.params["artifacts_destination"] == "s3://bucket/mlflow"
    assert ctx.params["serve_artifacts"] is True and ctx.params["port"] == 5000
    envvars = {p.name: p.envvar for p in server.params}
    assert {envvars["backend_store_uri"], envvars["artifacts_destination"]} <= env_names
    with pytest.raises(click.NoSuchOption):
        server.make_context("server", ["--artifact-destination=s3://x"])


def test_the_mlflow_host_check_admits_the_service_names_only():
    from mlflow.server.security_utils import is_allowed_host_header

    arg = next(a for a in mlflow_container()["args"] if a.startswith("--allowed-hosts="))
    allowed = arg.split("=", 1)[1].split(",")
    for host in ("mlflow.mrt.svc.cluster.local:5000", "mlflow.mrt:5000", "mlflow:5000", "mlflow.mrt.svc.cluster.local"):
        assert is_allowed_host_header(allowed, host), host
    assert not is_allowed_host_header(allowed, "mlflow.example.com:5000")


# --- the worker's Helm values -------------------------------------------------------------------

def worker_values() -> dict:
    return yaml.safe_load((K8S / "prefect-worker-values.yaml").read_text())


def test_the_worker_serves_the_gpu_pool_in_the_template_namespace(template):
    values = worker_values()
    worker = values["worker"]
    assert worker["apiConfig"] == "selfHostedServer"
    assert worker["selfHostedServerApiConfig"]["apiUrl"].endswith("/api")
    assert worker["config"]["workPool"] == "mrt-gpu" and worker["config"]["type"] == "kubernetes"
    namespace = template["variables"]["properties"]["namespace"]["default"]
    assert worker["config"]["jobNamespace"] == values["role"]["namespace"] == namespace
    assert values["role"]["create"] and values["rolebinding"]["create"]
    pins = dict(line.split("==") for line in (REPO / "constraints.txt").read_text().splitlines() if "==" in line)
    assert worker["image"]["prefectTag"].startswith(pins["prefect"] + "-python3.11")


def deep_merge(base: dict, over: dict) -> dict:
    """Helm's coalescing of user values over the chart's defaults (maps merged, the rest replaced)."""
    out = dict(base)
    for key, value in over.items():
        both_maps = isinstance(value, dict) and isinstance(base.get(key), dict)
        out[key] = deep_merge(base[key], value) if both_maps else value
    return out


@pytest.mark.skipif(not os.environ.get("PREFECT_WORKER_CHART"),
                    reason="PREFECT_WORKER_CHART (a prefect-worker chart folder, with values.schema.json) is unset")
def test_the_worker_values_fit_the_charts_schema():
    """Against the chart's own schema, as ``helm install`` checks: the chart's values.yaml under
    ours. The chart is not part of this repository; infra/k8s/README.md says which version."""
    import jsonschema

    chart = Path(os.environ["PREFECT_WORKER_CHART"])
    schema = json.loads((chart / "values.schema.json").read_text())
    merged = deep_merge(yaml.safe_load((chart / "values.yaml").read_text()), worker_values())
    jsonschema.Draft7Validator(schema).validate(merged)
    typo = deep_merge(merged, {"worker": {"config": {"workpool": "mrt-gpu"}}})
    with pytest.raises(jsonschema.ValidationError, match="workpool"):
        jsonschema.Draft7Validator(schema).validate(typo)


# --- nothing secret, no digests ---------------------------------------------------------------

PLACEHOLDER = "REPLACE_ME"
SECRET_PATTERNS = {
    "AWS access key id": r"\b(AKIA|ASIA)[0-9A-Z]{16}\b",
    "private key": r"-----BEGIN [A-Z ]*PRIVATE KEY-----",
    "GitHub token": r"\b(ghp|gho|ghs|github_pat)_[A-Za-z0-9_]{20,}",
    "password in a URL": r"://[^/\s:@]+:(?!REPLACE_ME@)[^@\s/]+@",
    "assigned secret": r"(?i)(secret|password|token|api_key)[\w-]*\s*[:=]\s*['\"]?(?!REPLACE_ME)[A-Za-z0-9+/=_-]{16,}",
    "long random token": r"\b[A-Za-z0-9+/]{40,}={0,2}(?![\w/.-])",
}


def secret_findings(text: str) -> list[str]:
    return [name for name, pattern in SECRET_PATTERNS.items() if re.search(pattern, text)]


def test_the_secret_finder_finds_what_it_should():
    hits = ["key: AKIAABCDEFGHIJKLMNOP", "-----BEGIN RSA PRIVATE KEY-----", "t = ghp_abcdefghijklmnopqrstuvwx1234",
            "postgresql://mlflow:hunter2@db:5432/mlflow", "AWS_SECRET_ACCESS_KEY: wJalrXUtnFEMIK7MDENGbPxRfiCY",
            "aws_secret=" + "Ab3" * 15]
    misses = ["AWS_SECRET_ACCESS_KEY: REPLACE_ME", "postgresql://REPLACE_ME:REPLACE_ME@REPLACE_ME:5432/mlflow",
              "secretRef: {name: mrt-dvc-remote}", "http://prefect-server.prefect.svc.cluster.local:4200/api"]
    assert all(secret_findings(text) for text in hits)
    assert not any(secret_findings(text) for text in misses)


def infra_files() -> list[Path]:
    files = [p for p in sorted(INFRA.rglob("*")) if p.is_file() and "__pycache__" not in p.parts]
    assert len(files) >= 12  # infra/k8s, infra/docker and the DeepSpeed/Accelerate configs
    return files


def test_no_file_in_infra_holds_a_secret_or_an_image_digest():
    found = {p.relative_to(REPO).as_posix(): secret_findings(p.read_text()) for p in infra_files()}
    assert {name: hits for name, hits in found.items() if hits} == {}
    assert [p.name for p in infra_files() if "@sha256:" in p.read_text()] == []


def test_the_example_secrets_hold_placeholders_only():
    for name, doc in manifests():
        if doc["kind"] == "Secret":
            assert "data" not in doc, name
            assert all(PLACEHOLDER in value for value in doc["stringData"].values()), name


def test_images_are_tagged_never_latest_or_by_digest():
    images = [c["image"] for _, doc in manifests() for c in containers(doc)]
    dockerfiles = sorted((INFRA / "docker").glob("*Dockerfile"))
    bases = [line.split()[1] for path in dockerfiles for line in path.read_text().splitlines()
             if line.startswith("FROM ") and "${" not in line]
    bases += re.findall(r"^ARG CUDA_IMAGE=(\S+)", (INFRA / "docker" / "Dockerfile").read_text(), re.M)
    assert images == ["REGISTRY/mrt-mlflow:COMMIT"] and len(bases) == 3
    for image in images + bases:
        assert re.fullmatch(r"[\w.\-/]+:[\w.\-]+", image) and not image.endswith(":latest"), image


def test_the_stage_image_is_the_repository_with_its_gpu_and_cluster_extras():
    dockerfile = (INFRA / "docker" / "Dockerfile").read_text()
    assert "ARG EXTRAS=gpu,cluster" in dockerfile and '-c constraints.txt -e ".[${EXTRAS}]"' in dockerfile
    assert "uv python install 3.11" in dockerfile
    repo_dir = re.search(r"MRT_REPO=(\S+)", dockerfile).group(1)
    assert f"WORKDIR {repo_dir}" in dockerfile
    assert "{{ $MRT_REPO }}" in (REPO / "prefect.yaml").read_text()  # the deployments' pull step goes there
    ignored = (INFRA / "docker" / "Dockerfile.dockerignore").read_text().split()
    assert {".venv", "/data", "/models", "/mlruns", "/runs"} <= set(ignored)
