# crowdtrain developer commands.
#   make demo   the whole thing locally (moto server, API, fold, pages) with a demo job
#   make test   lint, types and every test at a size that runs in minutes; the README's test command and CI's
#   make soak   the long runs: full-size chaos, the demo's ten-minute learning budget (README: Tests)
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
NODE_MODULES := frontend/node_modules/.package-lock.json
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
TIMED := infra/bin/timed

.PHONY: install system-deps frontend test lint soak demo clean

install: $(VENV)/.installed $(NODE_MODULES)

$(VENV)/.installed: requirements.txt requirements-dev.txt pyproject.toml
	@echo "== Python packages into $(VENV) (about a minute on a fresh machine)"
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --progress-bar off -r requirements-dev.txt | grep -E '^(Collecting|Successfully)' || true
	@$(PY) -c "import chalice, moto, numpy" || { echo "pip did not install the packages: see its errors above"; exit 1; }
	touch $@

$(NODE_MODULES): frontend/package.json frontend/package-lock.json
	@echo "== npm packages into frontend/node_modules"
	cd frontend && npm ci --no-audit --no-fund

# Debian packages: Chromium for the browser tests and swarm, bible-kjv for the demo's text.
system-deps:
	@if ! command -v bible >/dev/null || [ ! -x /usr/bin/chromium ]; then \
	  echo "== Debian packages chromium and bible-kjv (a few minutes: Chromium is large)"; \
	  $(SUDO) apt-get update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium bible-kjv; \
	fi

frontend: $(NODE_MODULES)
	cd frontend && node build.mjs

lint: install
	@$(TIMED) "lint and types (ruff, ruff format, mypy)" sh -c '$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check . && $(VENV)/bin/mypy'

test: install system-deps frontend lint
	@$(TIMED) "frontend unit tests" sh -c 'cd frontend && npm test --silent'
	@$(TIMED) "pytest, two test files at a time" $(PY) -m pytest -n 2 --dist loadfile -m "not alone and not soak"; parallel=$$?; \
	$(TIMED) "pytest, the tests marked alone, one at a time" $(PY) -m pytest -m "alone and not soak"; alone=$$?; \
	[ $$parallel -eq 0 ] && [ $$alone -eq 0 ]

soak: install system-deps frontend
	@$(TIMED) "pytest, the long runs (marked soak), one at a time" $(PY) -m pytest -m soak

demo: install system-deps frontend
	$(VENV)/bin/crowdtrain local

clean:
	rm -rf $(VENV) frontend/node_modules frontend/dist .pytest_cache artifacts .crowdtrain
