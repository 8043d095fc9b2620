# The README's two commands: `make demo` and `make test`. Each builds .venv from the pinned lock file first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo detect test test-slow clean

# Some machines set PYTHONDONTWRITEBYTECODE=1: then every command a test starts compiles graphsurgery's sources again,
# and pytest rewrites the asserts of every test file again in each worker and each run (about 11 s of CPU per worker)
unexport PYTHONDONTWRITEBYTECODE

# --no-compile: pip byte-compiles every module it installs (torch, sympy, scipy: 57 s of CPU here), where a run
# imports a fraction of them, compiled on first import and cached (about 15 s of CPU for what the suite imports)
PIP := $(PY) -m pip install --quiet --disable-pip-version-check --no-compile

$(STAMP): requirements.lock requirements-models.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) -r requirements.lock
	$(PIP) --no-deps -r requirements-models.txt
	$(PIP) --no-deps --no-build-isolation -e .
	touch $(STAMP)

demo: $(STAMP)
	$(PY) examples/demo.py

detect: $(STAMP)
	$(PY) examples/detect.py

test: $(STAMP)
	$(VENV)/bin/ruff check
	$(PY) -m pytest -n 2 -q

test-slow: $(STAMP)
	$(PY) -m pytest -n 2 -q -m slow

clean:
	rm -rf $(VENV) build *.egg-info
