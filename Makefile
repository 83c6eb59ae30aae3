# grpclab's commands. `make lab` opens the tutorial, `make test` runs every test.
SHELL := /bin/bash
PYTHON ?= python3
# A wheelhouse (`make wheelhouse`, or the instructor's USB stick) in wheelhouse/, or
# WHEELHOUSE=path: setup installs from it and asks no index. WHEELHOUSE= turns it off.
WHEELHOUSE ?= $(if $(wildcard wheelhouse/requirements.txt),wheelhouse)
# .venv/.wheelhouse: this .venv was installed offline (it names the wheelhouse).
OFFLINE := $(or $(WHEELHOUSE),$(wildcard .venv/.wheelhouse))
# uv from PATH, or bootstrapped once into .tools/ with pip when it is missing.
UV := $(shell command -v uv 2>/dev/null || echo .tools/bin/uv)
# setup is the only step that installs: the others run what .venv holds, with no network.
RUN := $(UV) run --frozen --no-sync
# .venv's files come from uv's cache in uv's default way (copy-on-write clones on Linux and
# macOS, `uv help sync`; where the filesystem has none, as on this ext4, the sync still
# took 1.7 s). Copying every file (UV_LINK_MODE=copy) took 8 s and 11 CPU-s here.

# Python caches each module it compiles in __pycache__ (ignored by git), unless
# PYTHONDONTWRITEBYTECODE is set, as some images and CI runners do. uv installs no .pyc
# either, so there every process compiles every module it imports from source, every
# time: a sandbox pod (grpc, protobuf), a kernel (IPython, plotly), a test worker (and
# pytest's assertion rewriting). Measured here: one notebook's nbval test 11 CPU-s with
# it set, 4.4 without. What make runs writes the cache.
unexport PYTHONDONTWRITEBYTECODE

.PHONY: setup lab demo test lint format protos test-unit test-contract test-notebooks \
        notebooks bench down clean kind-up kind-down wheelhouse preflight

# A venv without pip of its own, filled by $(PYTHON)'s pip (`--python` needs pip 22.3 or
# newer): 4 s here, where a venv's own pip (ensurepip) took 14 s more. Without such a pip,
# the venv's own.
UV_FROM := $(if $(WHEELHOUSE),--no-index --find-links $(WHEELHOUSE)) uv
.tools/bin/uv:
	$(PYTHON) -m venv --without-pip .tools
	$(PYTHON) -m pip --python .tools/bin/python install --quiet $(UV_FROM) \
	  || { rm -rf .tools && $(PYTHON) -m venv .tools && .tools/bin/pip install --quiet $(UV_FROM); }

.venv/.synced: pyproject.toml uv.lock | $(UV)
ifeq ($(strip $(WHEELHOUSE)),)
	$(UV) sync --frozen
	rm -f .venv/.wheelhouse
else
	@echo "installing offline from $(WHEELHOUSE)/ (no index; WHEELHOUSE= to use PyPI)"
	$(PYTHON) src/grpclab/tools/wheelhouse.py install $(WHEELHOUSE) $(UV) $(PYTHON)
endif
	touch $@

# The Node client of notebook 11, from its package-lock.json, when node and npm are on PATH;
# not when installed offline from a wheelhouse (npm ci needs the npm registry).
NODE_CLIENT := $(if $(OFFLINE),,$(if $(and $(shell command -v node),$(shell command -v npm)),clients/node/node_modules/.package-lock.json))

clients/node/node_modules/.package-lock.json: clients/node/package.json clients/node/package-lock.json
	cd clients/node && npm ci --ignore-scripts --no-audit --no-fund
	touch $@

# The two installs share nothing, so they run side by side: from a fresh clone here,
# `make setup` took 12.5 s (it was 30 s with uv's bootstrap, then npm ci, one after the other).
setup:  ## install the Python environment (uv, from uv.lock; offline from a wheelhouse) and the Node client
	@$(MAKE) --no-print-directory -j2 .venv/.synced $(NODE_CLIENT)

lab: setup  ## open the tutorial in JupyterLab on the sandbox backend
	$(RUN) jupyter lab --ServerApp.ip=127.0.0.1 notebooks/00-setup.ipynb

demo: setup  ## headless: ClusterIP vs round_robin, requests per pod
	$(RUN) grpclab demo

# The tests run on TEST_WORKERS pytest-xdist workers (most of their time is waiting on
# sandboxes and load runs, so more workers than cores pays): each module is one group on one
# worker, the notebooks one group each, longest first (tests/parallel.py). Each sandbox is
# its own, but a real cluster is shared: with GRPCLAB_BACKEND=kind or kubeconfig they run
# one after another (TEST_WORKERS=0, in this process). PYTEST_ARGS adds pytest options.
TEST_WORKERS ?= $(if $(filter-out sandbox,$(or $(GRPCLAB_BACKEND),sandbox)),0,6)
PYTEST := $(RUN) pytest -n $(TEST_WORKERS) --dist loadgroup $(PYTEST_ARGS)

test: setup lint  ## every test: lint, stale stubs, unit, sandbox, contract, notebooks
	$(RUN) python -m grpclab.tools.codegen --check
	$(PYTEST) --durations=15 tests

test-unit: setup
	$(PYTEST) tests --ignore=tests/contract

test-contract: setup  ## the Cluster contract, against $$GRPCLAB_BACKEND (default sandbox)
	$(PYTEST) tests/contract

test-notebooks: setup  ## nbval over notebooks/, against $$GRPCLAB_BACKEND
	$(PYTEST) tests/test_notebooks.py

notebooks: setup  ## re-execute every notebook and store its outputs (no widget state)
	$(RUN) jupyter nbconvert --to notebook --execute --inplace \
		--ExecutePreprocessor.store_widget_state=False notebooks/*.ipynb

# Everything people read: the code, and the notebooks' and labs' cells (ruff reads .ipynb).
LINTED := src tests bench notebooks labs

lint: setup  ## ruff over $(LINTED)
	$(RUN) ruff check $(LINTED)
	$(RUN) ruff format --check $(LINTED)

format: setup  ## ruff's fixes and format over $(LINTED)
	$(RUN) ruff check --fix $(LINTED)
	$(RUN) ruff format $(LINTED)

protos: setup  ## regenerate src/grpclab/demo/_generated from protos/
	$(RUN) python -m grpclab.tools.codegen

bench: setup  ## benchmarks: each prints ratios measured in one run
	for script in bench/bench_*.py; do $(RUN) python "$$script" || exit 1; done

kind-up:  ## real Kubernetes: kind cluster + demo image (needs docker, kind, kubectl)
	bash cluster/kind-up.sh

kind-down:  ## remove the kind cluster
	bash cluster/kind-down.sh

wheelhouse:  ## wheels of every locked package for every supported Python, in wheelhouse/
	$(MAKE) setup WHEELHOUSE=  # from PyPI, not from the wheelhouse being rebuilt
	$(RUN) python -m grpclab.tools.wheelhouse wheelhouse

preflight: setup  ## is this machine ready for the workshop? (under 30 s)
	$(RUN) grpclab preflight

down:  ## end processes left by sandboxes whose owner died
	$(RUN) grpclab down

clean: down
	rm -rf .pytest_cache .ruff_cache artifacts
