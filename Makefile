# crowdtrain developer commands.
#   make demo   the whole thing locally (moto server, API, fold, pages) with a demo job
#   make test   every test; the README's test command and what CI runs
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
NODE_MODULES := frontend/node_modules/.package-lock.json
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: install system-deps frontend test demo clean

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

test: install system-deps frontend
	@echo "== frontend unit tests"
	cd frontend && npm test
	@echo "== pytest: two test files at a time (27-29 minutes on 2 cores), then the tests marked alone (about 6)"
	@$(PY) -m pytest -n 2 --dist loadfile -m "not alone"; parallel=$$?; \
	$(PY) -m pytest -m alone; alone=$$?; \
	[ $$parallel -eq 0 ] && [ $$alone -eq 0 ]

demo: install system-deps frontend
	$(VENV)/bin/crowdtrain local

clean:
	rm -rf $(VENV) frontend/node_modules frontend/dist .pytest_cache artifacts .crowdtrain
