# The two commands in the README: `make run` and `make test`.
# Everything else here is what they need: a virtual environment with both
# projects installed, pinned by requirements/constraints.txt.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
CACHE := .cache
# The embedded default model for `make run`: built locally, no download.
TASK ?= text-to-image
HOST ?= 127.0.0.1
PORT ?= 8000
MODEL_DIR := $(CACHE)/models
# The compile tests (marker `compile`: inductor for real, 2 to 6 minutes on 2 cores) run in `make test-compile`.
PYTEST_ARGS ?= -m "not compile"
# Two pytest-xdist workers (the CI machine has 2 cores); worksteal keeps both busy
# to the end. `make test PYTEST_WORKERS=` runs the suite in one process.
PYTEST_WORKERS ?= -n 2 --dist worksteal

.PHONY: run test test-compile lint venv generate openapi graph bench clean

venv: $(STAMP)

$(STAMP): requirements/constraints.txt requirements/dev.txt runner/pyproject.toml operator/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c requirements/constraints.txt \
		--config-settings editable_mode=lenient \
		-e "runner[test]" -e "operator[test]" -r requirements/dev.txt
	touch $(STAMP)

# Exported so the shell prints it verbatim, quotes and all.
export CURL_EXAMPLE := curl -s http://$(HOST):$(PORT)/text-to-image -H 'Content-Type: application/json' -d '{"prompt": "a lighthouse at dusk", "num_inference_steps": 4, "seed": 42}'

run: $(STAMP)
	$(BIN)/kubediffusers-tiny-model --task $(TASK) --model-dir $(MODEL_DIR)
	@echo "Starting the $(TASK) runner on http://$(HOST):$(PORT) (tiny random-weight model, CPU). Once it logs 'ready', try:"
	@if [ "$(TASK)" = "text-to-image" ]; then \
		printf '  %s\n' "$$CURL_EXAMPLE"; \
		printf '  %s\n' "$$CURL_EXAMPLE -H 'Accept: image/png' -o image.png"; \
	else echo "  the $(TASK) example in docs/runner-api.md"; fi
	KUBEDIFFUSERS_TASK=$(TASK) \
	KUBEDIFFUSERS_MODEL_ID=kubediffusers/tiny-$(TASK) \
	KUBEDIFFUSERS_MODEL_DIR=$(MODEL_DIR) \
	KUBEDIFFUSERS_DEVICE=cpu \
	KUBEDIFFUSERS_HOST=$(HOST) \
	KUBEDIFFUSERS_PORT=$(PORT) \
	$(BIN)/kubediffusers-runner

# Lint, format and types for both distributions (settings in ruff.toml and each pyproject).
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	cd runner && ../$(BIN)/mypy src
	cd operator && ../$(BIN)/mypy src

# pytest exits 5 when it collected no test; that is a failure here, not a pass.
test: lint
	@$(BIN)/python -m pytest $(PYTEST_WORKERS) $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests (exit 5)"; fi; \
	exit $$rc

test-compile: $(STAMP)
	$(BIN)/python -m pytest -m compile

# Every generated file: the CRD and its field reference (docs/crd.md), the
# chart's copy of the CRDs, and the runner's OpenAPI document. Tests fail when
# any of them is stale.
generate: $(STAMP)
	$(BIN)/python hack/gen_crd.py
	$(BIN)/python hack/sync_chart_crds.py
	$(BIN)/python hack/gen_openapi.py

openapi: $(STAMP)
	$(BIN)/python hack/gen_openapi.py

# Import circles and the runner's upward imports (docs/architecture.md, "Runner").
graph: $(STAMP)
	$(BIN)/python hack/import_graph.py

# Serving overhead on the tiny model: HTTP end to end vs a direct pipeline call.
bench: $(STAMP)
	$(BIN)/kubediffusers-bench serving --tiny --model-dir $(MODEL_DIR) --runs 30

clean:
	rm -rf $(VENV) $(CACHE)
