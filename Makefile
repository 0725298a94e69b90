# The two commands of the README, plus helpers. Everything runs in a local venv (.venv): no conda,
# no GPU, nothing downloaded except packages from PyPI.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.pecop-installed
PRESET ?= auto
PYTEST_ARGS ?=

.PHONY: setup browser tutorial test lab course clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -e '.[test]'
	touch $(STAMP)

## setup: create/reuse .venv and install pecop with its dependencies (and Chromium for the browser test)
setup: $(STAMP) browser

## browser: Debian's chromium + chromium-driver for the JupyterLab browser test (apt-get, as root, when missing)
browser:
	@if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then :; \
	elif command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	  echo "installing chromium and chromium-driver with apt-get (JupyterLab browser test)"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver) \
	    || echo "apt-get could not install chromium: tests/browser will fail (PECOP_SKIP_BROWSER_TEST=1 skips it)"; \
	else \
	  echo "chromium/chromedriver are missing and cannot be installed here (needs apt-get as root):" \
	       "tests/browser will fail; install them or set PECOP_SKIP_BROWSER_TEST=1 to skip that test"; \
	fi

## tutorial: run the whole notebook sequence headlessly (preset auto: tutorial on a GPU, else course)
tutorial: $(STAMP)
	$(BIN)/pecop notebooks run --preset $(PRESET)

## test: run the test suite (pytest exit code 5, "no tests collected", counts as success)
test: $(STAMP) browser
	$(BIN)/python -m pytest --durations=15 $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest: no tests collected"; exit 0; fi; exit $$rc

## course: build the course kit (student and instructor editions, nbgrader) into course/build
course: $(STAMP)
	$(BIN)/pecop course build

## lab: open the notebooks in JupyterLab
lab: $(STAMP)
	$(BIN)/jupyter lab notebooks/

clean:
	rm -rf runs .pytest_cache
