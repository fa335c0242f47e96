# make run   : set up .venv (CPU torch where no GPU) and run the default pipeline with dvc repro
# make test  : the same set-up, then the test suite (under 10 minutes)
# make test-e2e : the tests that start servers or launchers or kill processes (under 30 minutes)
# make flow  : the same pipeline as a Prefect flow (ephemeral API, no server to start)
# make headline : the headline experiment (profiles/params_headline.yaml) in its own workspace runs/headline
# make retrain  : scheduled retraining once, here (flows/retrain.py): skip, or train + register + gate
# make server / make worker / make deploy / make status : team use on a Prefect server (docs/TEAM.md)
#
# Override the torch install on other machines, e.g.
#   make run TORCH_SPEC="torch==2.13.0" TORCH_PIP_ARGS="--index-url <your CUDA or CPU wheel index>"

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
TORCH_SPEC ?= torch==2.13.0
TORCH_PIP_ARGS ?=
# the versions measured to work together; CONSTRAINTS= installs the newest the ranges allow
CONSTRAINTS ?= constraints.txt
HAS_GPU := $(shell command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1 && echo yes)
STAMP := $(VENV)/.installed

export PREFECT_HOME := $(CURDIR)/.prefect
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS := 120
export DO_NOT_TRACK := 1
export DVC_NO_ANALYTICS := 1
export MLFLOW_ENABLE_TELEMETRY := false
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

# a team's Prefect server: `make server` starts one here; worker, deploy and status talk to it
PREFECT_PORT ?= 4200
SERVER_API ?= http://127.0.0.1:$(PREFECT_PORT)/api
POOL ?= mrt-process
STAGE_POOL ?= mrt-stages
STAGE_SLOTS ?= 2
GPU_POOL ?= mrt-gpu

.PHONY: setup constraints run flow headline retrain server worker stage-worker deploy fanout status test test-e2e lint ui clean-outputs

setup: $(STAMP)

$(STAMP): pyproject.toml $(CONSTRAINTS)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	@echo "installing $(TORCH_SPEC) ($(if $(HAS_GPU),GPU machine,no GPU: CPU build))"
	$(BIN)/pip install --quiet "$(TORCH_SPEC)" $(TORCH_PIP_ARGS)
	$(BIN)/pip install --quiet -e ".[dev]" $(if $(CONSTRAINTS),-c $(CONSTRAINTS))
	touch $(STAMP)

# write constraints.txt from this environment (after an upgrade that passed the tests)
constraints: $(STAMP)
	{ sed -n '1,/^# Refresh/p' constraints.txt; $(BIN)/pip freeze --exclude-editable | grep -v -e '^torch==' -e '^nvidia-' -e '^triton=='; } > constraints.txt.new
	mv constraints.txt.new constraints.txt

run: $(STAMP)
	MRT_PIPELINE_RUN=$$($(BIN)/python -c 'import uuid; print(uuid.uuid4().hex[:12])') PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/dvc repro

flow: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m flows.pipeline

headline: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m flows.profile_run profiles/params_headline.yaml

retrain: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m flows.retrain

# the server's SQLite database is .prefect/prefect.db; the UI at http://127.0.0.1:$(PREFECT_PORT)
server: $(STAMP)
	$(BIN)/prefect server start --host 127.0.0.1 --port $(PREFECT_PORT)

# a process worker: runs the deployments' flows in this clone (MRT_REPO, read by prefect.yaml)
worker: $(STAMP)
	PREFECT_API_URL=$(SERVER_API) MRT_REPO=$(CURDIR) PATH="$(CURDIR)/$(BIN):$$PATH" \
	  $(BIN)/prefect worker start --pool $(POOL) --type process

# a worker on the stage pool (stage jobs of the fan-out), at most STAGE_SLOTS at once
stage-worker: $(STAMP)
	PREFECT_API_URL=$(SERVER_API) MRT_REPO=$(CURDIR) PATH="$(CURDIR)/$(BIN):$$PATH" \
	  $(BIN)/prefect worker start --pool $(STAGE_POOL) --type process --limit $(STAGE_SLOTS)

# the pools (process: flows and, standing in for the GPU pool, stage jobs; kubernetes: the
# cluster's GPU pool, its base job template from infra/k8s), then every deployment
deploy: $(STAMP)
	PREFECT_API_URL=$(SERVER_API) $(BIN)/prefect work-pool create $(POOL) --type process --overwrite
	PREFECT_API_URL=$(SERVER_API) $(BIN)/prefect work-pool create $(STAGE_POOL) --type process --overwrite
	PREFECT_API_URL=$(SERVER_API) $(BIN)/prefect work-pool set-concurrency-limit $(STAGE_POOL) $(STAGE_SLOTS)
	PREFECT_API_URL=$(SERVER_API) $(BIN)/prefect work-pool create $(GPU_POOL) --type kubernetes --overwrite \
	  --base-job-template infra/k8s/gpu-job-template.json
	PREFECT_API_URL=$(SERVER_API) env -u MRT_REPO $(BIN)/prefect --no-prompt deploy --all

# the pipeline fanned out over the stage pool (REMOTE: a DVC remote URL; default the repository's)
fanout: $(STAMP)
	PREFECT_API_URL=$(SERVER_API) PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m flows.fanout \
	  --concurrency $(STAGE_SLOTS) $(if $(REMOTE),--remote $(REMOTE)) $(if $(PROFILE),--profile $(PROFILE))

status: $(STAMP)
	PREFECT_API_URL=$(SERVER_API) $(BIN)/python -m flows.status

test: $(STAMP)
	$(BIN)/ruff check mrt_core mrt_lib tasks flows tests benchmarks
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m pytest -q -m "not e2e"

# servers (Prefect, DVC pipelines), launchers and kills; each test has its own time limit
test-e2e: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m pytest -q -m e2e --timeout=900

lint: $(STAMP)
	$(BIN)/ruff check mrt_core mrt_lib tasks flows tests benchmarks

ui: $(STAMP)
	$(BIN)/mlflow ui --backend-store-uri sqlite:///mlflow.db --port 5000
