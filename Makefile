# The two set-up commands of the README: `make demo` and `make test`.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install test demo bench bench-gpu lint clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch first: a bare `torch` requirement would pull a multi-GB CUDA build.
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

test: install
	OMP_NUM_THREADS=2 $(BIN)/python -m pytest tests

demo: install
	$(BIN)/mmbert demo --out runs/demo

bench: install
	$(BIN)/python bench/inference.py

# The GPU check in one command (bench/gpu.py; its docstring says how to run it on a lent device machine,
# which has no venv and no network: its own python3, torch-optimi carried as a wheel).
bench-gpu:
	PYTHONPATH=src$${PYTHONPATH:+:$$PYTHONPATH} python3 bench/gpu.py $(GPU_ARGS)

lint: install
	$(BIN)/ruff check src tests bench examples
	$(BIN)/ruff format --check src tests bench examples

clean:
	rm -rf $(VENV) runs
