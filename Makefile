# One-command workflows. Every target sets the project up first when needed; all are idempotent.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
FMNIST := /usr/share/datasets/fashion-mnist

ARGS        ?=
PYTEST_ARGS ?=

.PHONY: setup data search app test bench lint clean

setup: $(STAMP) data

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev,onnx]'
	@touch $(STAMP)

# The embedded default dataset: Debian's dataset-fashion-mnist, where apt is there and we may use it.
data:
	@if [ -d $(FMNIST) ]; then :; \
	elif command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1 || \
		{ apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist >/dev/null; } || \
		echo "note: could not install dataset-fashion-mnist; the search will look in --data-dir / EXPLORER_DATA or download"; \
	else \
		echo "note: no $(FMNIST); install it with 'sudo apt-get install dataset-fashion-mnist' or pass --data-dir"; \
	fi

search: setup
	$(BIN)/python -m explorer.search $(ARGS)

# The dashboard through the console command (the same page as `streamlit run app/main.py`);
# ARGS takes its flags: make app ARGS="--study NAME --port 8502".
app: setup
	$(BIN)/inception-explorer dashboard $(ARGS)

test: setup
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# The quick benches, each a few minutes at most on 2 CPU cores and each rewriting its BENCHMARKS.md
# section: latency, threads, trainer, verdicts (`python -m bench --help` marks them "quick"). The
# others take from tens of minutes to hours, or need a study, a PostgreSQL server or a GPU: run
# them by name, `python -m bench NAME --help` says how.
bench: setup
	$(BIN)/python -m bench latency --write
	$(BIN)/python -m bench threads
	$(BIN)/python -m bench trainer
	$(BIN)/python -m bench verdicts --write

# ruff, and import-linter's contracts in pyproject.toml (layers, no cycles): an upward import fails.
lint: setup
	$(BIN)/ruff check search_space explorer app tests bench
	$(BIN)/ruff format --check search_space explorer app tests bench
	$(BIN)/lint-imports

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache
