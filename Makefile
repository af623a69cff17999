# Two commands for a fresh machine (see README):
#   make demo   - train an MLP on scikit-learn's digits, prune it with several criteria,
#                 print the accuracy table, make it permanent, save and plot
#   make test   - the full test suite (what CI runs, via .ci/run)
# Both create .venv and install torch==2.13.0 (CPU) through constraints.txt.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP_FLAGS ?= --quiet --disable-pip-version-check

.PHONY: demo test lint format clean

# The plugin distributions are installed for real (non-editable, from their own
# directories), so their wheel metadata and entry points are what the tests see.
PLUGINS := $(wildcard plugins/*/pyproject.toml)
PLUGIN_FILES := $(shell find plugins -type f -not -path '*/build/*' -not -path '*/__pycache__/*' -not -path '*.egg-info/*')

$(VENV)/.installed: pyproject.toml constraints.txt $(PLUGIN_FILES)
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install $(PIP_FLAGS) -c constraints.txt -e ".[test]"
	$(PY) -m pip install $(PIP_FLAGS) -c constraints.txt --no-deps --force-reinstall $(dir $(PLUGINS))
	touch $@

demo: $(VENV)/.installed
	$(VENV)/bin/prunefw demo

test: $(VENV)/.installed
	$(PY) -m pytest

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(VENV)/.installed
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .ruff_cache .hypothesis
