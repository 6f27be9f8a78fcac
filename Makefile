# Everything runs inside .venv, created from nothing on first use.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.stamp-install

.PHONY: venv test lint typecheck pytest demo bench clean

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

demo: $(STAMP)
	$(VENV)/bin/layca-optax demo --out demo-out

bench: $(STAMP)
	$(PY) benchmarks/step_time.py --out benchmarks/step_time.json

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
