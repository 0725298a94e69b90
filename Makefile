# The two commands of the README, plus helpers. Everything runs in a local venv (.venv): no conda,
# no GPU, nothing downloaded except packages from PyPI.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.pecop-installed
PRESET ?= auto
PYTEST_ARGS ?=

.PHONY: setup tutorial test lab clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -e '.[test]'
	touch $(STAMP)

## setup: create/reuse .venv and install pecop with its dependencies
setup: $(STAMP)

## tutorial: run the whole notebook sequence headlessly (preset auto: tutorial on a GPU, else smoke)
tutorial: $(STAMP)
	$(BIN)/pecop notebooks run --preset $(PRESET)

## test: run the test suite (pytest exit code 5, "no tests collected", counts as success)
test: $(STAMP)
	$(BIN)/python -m pytest --durations=15 $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest: no tests collected"; exit 0; fi; exit $$rc

## lab: open the notebooks in JupyterLab
lab: $(STAMP)
	$(BIN)/jupyter lab notebooks/

clean:
	rm -rf runs .pytest_cache
