# `make demo` and `make test` each build the virtual environment they need and nothing else is
# required: no network beyond the package index, no GPU, no account on the Hub.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# torch is pinned to the CPU build this project is tested with; an unpinned torch would pull
# a multi-GB CUDA build.
TORCH ?= torch==2.13.0
PYTEST_ARGS ?=

.PHONY: demo test bench clean

$(VENV)/.installed: pyproject.toml plugins/example/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q -e ".[run,int8,test]" -e plugins/example
	touch $@

demo: $(VENV)/.installed
	$(PY) -m modelmgr.testing.demo

test: $(VENV)/.installed
	$(PY) -m pytest $(PYTEST_ARGS)

bench: $(VENV)/.installed
	$(PY) benchmarks/bench_list.py
	$(PY) benchmarks/bench_pull.py
	$(PY) benchmarks/bench_run.py

clean:
	rm -rf $(VENV) .pytest_cache
