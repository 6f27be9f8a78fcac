# Everything runs inside .venv, created from nothing on first use.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.stamp-install

.PHONY: venv test test-fast lint typecheck pytest demo bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

venv: $(STAMP)

lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

typecheck: $(STAMP)
	$(PY) -m mypy

pytest: $(STAMP)
	$(PY) -m pytest -n auto --doctest-modules layca_optax tests

test: lint typecheck pytest

# The suite without the tests marked slow (@pytest.mark.slow: long runs,
# subprocesses, the app end to end, the docs site, layca's [chain] cases),
# for the edit-test loop: 1288 of 1775 tests, 2 min 38 s on 2 cores.
# `make test` (what CI runs) runs them all.
test-fast: $(STAMP)
	$(PY) -m pytest -n auto -m "not slow" --doctest-modules layca_optax tests

demo: $(STAMP)
	$(VENV)/bin/layca-optax demo --out demo-out

bench: $(STAMP)
	$(PY) benchmarks/step_time.py --out benchmarks/step_time.json

# The TPU program of each step, compiled without a TPU: libtpu (jax[tpu]
# pinned to the jax of .venv) in a venv of its own, kept out of .venv.
TPU_VENV := build/venv-tpu
.PHONY: bench-tpu
bench-tpu: $(STAMP)
	test -x $(TPU_VENV)/bin/python || $(PYTHON) -m venv $(TPU_VENV)
	$(TPU_VENV)/bin/python -m pip install --quiet -e . \
		"jax[tpu]==$$($(PY) -c 'import jax; print(jax.__version__)')"
	$(TPU_VENV)/bin/python benchmarks/tpu_cost.py --out benchmarks/tpu_cost.json

# The GPU program of each step, compiled without a GPU (H100 SXM): the CUDA
# plugin of the jax of .venv, without its dependencies, and ptxas, in a venv
# of its own, kept out of .venv.
GPU_VENV := build/venv-gpu
.PHONY: bench-gpu
bench-gpu: $(STAMP)
	test -x $(GPU_VENV)/bin/python || $(PYTHON) -m venv $(GPU_VENV)
	v=$$($(PY) -c 'import jax; print(jax.__version__)') && \
	$(GPU_VENV)/bin/python -m pip install --quiet -e . "jax==$$v" "jaxlib==$$v" && \
	$(GPU_VENV)/bin/python -m pip install --quiet --no-deps \
		"jax-cuda12-plugin==$$v" "jax-cuda12-pjrt==$$v" nvidia-cuda-nvcc-cu12
	$(GPU_VENV)/bin/python benchmarks/gpu_cost.py --out benchmarks/gpu_cost.json

# The docs: every code cell of every page runs (an error fails the build),
# warnings are errors, then the docstrings' examples run (doctest builder).
DOCS_STAMP := $(VENV)/.stamp-docs

$(DOCS_STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e '.[docs]'
	touch $(DOCS_STAMP)

# MathJax, served with the site (docs/_ext/offline_math.py) so that the
# formulas render offline: the npm package pinned, with its checksum, in
# docs/package-lock.json.
MATHJAX := docs/node_modules/mathjax/es5/tex-mml-chtml.js

$(MATHJAX): docs/package.json docs/package-lock.json
	npm ci --prefix docs --no-audit --no-fund
	touch $@

# Last, the built site is checked: it loads nothing from another host, and
# its formulas render in headless Chromium (where installed) with no network.
.PHONY: docs
docs: $(DOCS_STAMP) $(MATHJAX)
	$(PY) -m sphinx -T -W --keep-going -E -j auto -b html -d docs/_build/doctrees docs docs/_build/html
	$(PY) -m sphinx -W --keep-going -b doctest -d docs/_build/doctrees docs docs/_build/doctest
	LAYCA_DOCS_SITE=docs/_build/html $(PY) -m pytest -q -rs tests/docs/test_docs_site.py

# The hostile-input tests (numerics, API misuse, crafted files, command line,
# signals), hypothesis with its larger profile (300 examples per test); prints
# the inputs tried and failures per category (tests/fuzz_counts.py) and writes
# them to build/fuzz_counts.json.
.PHONY: fuzz
fuzz: $(STAMP)
	mkdir -p build
	HYPOTHESIS_PROFILE=layca-fuzz $(PY) -m pytest -n auto -p tests.fuzz_counts \
		--fuzz-counts build/fuzz_counts.json \
		$$($(PY) -c 'from tests.fuzz_counts import FILES; print(*FILES)')

# The test suite against the oldest supported jax and optax (the minimums
# in pyproject.toml), in a venv of its own.
MIN_VENV := build/venv-min
MIN_PINS := jax==0.8.0 jaxlib==0.8.0 optax==0.2.7 flax==0.12.0
MIN_STAMP := $(MIN_VENV)/.stamp-install

$(MIN_STAMP): pyproject.toml
	$(PYTHON) -m venv $(MIN_VENV)
	$(MIN_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(MIN_VENV)/bin/python -m pip install --quiet -e '.[test]' $(MIN_PINS)
	touch $(MIN_STAMP)

.PHONY: test-min
test-min: $(MIN_STAMP)
	$(MIN_VENV)/bin/python -m pytest -n auto tests

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
