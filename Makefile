# crowdtrain developer commands. `make test` is the README's test command and what CI runs.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
NODE_MODULES := frontend/node_modules/.package-lock.json

.PHONY: install test clean

install: $(VENV)/.installed $(NODE_MODULES)

$(VENV)/.installed: requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $@

$(NODE_MODULES): frontend/package.json frontend/package-lock.json
	cd frontend && npm ci --no-audit --no-fund

test: install
	$(PY) -m pytest

clean:
	rm -rf $(VENV) frontend/node_modules .pytest_cache
