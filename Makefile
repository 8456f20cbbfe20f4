# `make demo` and `make test` each build the virtual environment they need and nothing else is
# required: no network beyond the package index, no GPU, no account on the Hub.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# torch is pinned to the CPU build this project is tested with; an unpinned torch would pull
# a multi-GB CUDA build.
TORCH ?= torch==2.13.0
PYTEST_ARGS ?=
# llama-cpp-python builds llama.cpp from source (cmake, gcc; ~6 min on 2 cores the first time,
# then pip's wheel cache makes it seconds). Pinned so CI reuses the cached wheel.
LLAMA_CPP ?= llama-cpp-python==0.3.36

# olah (a self-hosted Hub mirror) is a server the tests run modelmgr against, not a dependency:
# it gets its own venv. Its dependencies (fastapi, uvicorn, GitPython, huggingface_hub, ...) pull
# no torch and no CUDA.
OLAH_VENV ?= .venv-olah
OLAH ?= olah==0.5.4

.PHONY: demo test bench clean olah-venv gguf-venv

$(VENV)/.installed: pyproject.toml plugins/example/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q -e ".[run,int8,serve,test]" -e plugins/example
	touch $@

# The GGUF backend (plugins/llamacpp) and its runtime, apart from the base install so that
# `make demo` does not wait for a llama.cpp build.
$(VENV)/.gguf-installed: $(VENV)/.installed plugins/llamacpp/pyproject.toml
	$(PY) -m pip install -q "$(LLAMA_CPP)"
	$(PY) -m pip install -q -e ".[gguf]" -e plugins/llamacpp
	touch $@

gguf-venv: $(VENV)/.gguf-installed

demo: $(VENV)/.installed
	$(PY) -m modelmgr.testing.demo

$(OLAH_VENV)/.installed:
	$(PYTHON) -m venv $(OLAH_VENV)
	$(OLAH_VENV)/bin/python -m pip install -q --upgrade pip
	$(OLAH_VENV)/bin/python -m pip install -q "$(OLAH)"
	touch $@

olah-venv: $(OLAH_VENV)/.installed

# tests/test_olah.py uses .venv-olah; in CI (CI=true) it fails rather than skips without it.
test: $(VENV)/.gguf-installed $(OLAH_VENV)/.installed
	$(PY) -m pytest $(PYTEST_ARGS)

bench: $(VENV)/.gguf-installed
	$(PY) benchmarks/bench_list.py
	$(PY) benchmarks/bench_pull.py
	$(PY) benchmarks/bench_run.py
	# transformers serve, the baseline of bench_serve, needs fastapi and pydantic besides the serve extra.
	$(PY) -m pip install -q fastapi
	$(PY) benchmarks/bench_serve.py

clean:
	rm -rf $(VENV) $(OLAH_VENV) .pytest_cache
