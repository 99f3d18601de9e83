# The two commands of the README's Quick start: `make run` and `make test`.
# Everything the project needs is installed from here (a fresh machine has none of it).

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
PYTEST_ARGS ?=

.PHONY: run test install dev peers services ohif typecheck imports lint-js bench bench-peers clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

# Runtime dependencies only; the stamp makes a second `make run` start at once.
$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/pip install -q -e .
	touch $@

# Test dependencies (pytest, SeaweedFS's `weed`, dicomweb-client) on top.
$(VENV)/.installed-dev: $(VENV)/.installed
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

install: $(VENV)/.installed
dev: $(VENV)/.installed-dev

# Independent DICOM peers the tests talk to (DCMTK: echoscu, storescu, dcmsend, storescp,
# dcmdump, dcmj2pnm, dcmcjpeg; GDCM's gdcmscu; Orthanc's C-STORE SCU, all in
# tests/edge/test_interop_matrix.py), the CJK font the ECG paper's Chinese labels are drawn
# with, and Debian's Chromium that Playwright drives in the page tests.
APT_PEERS := dcmtk libgdcm-tools orthanc fonts-noto-cjk chromium poppler-utils fuse3 nginx
peers:
	@missing=$$(for p in $(APT_PEERS); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing; \
	fi

# The OHIF viewer's prebuilt release (npm's @ohif/app, pinned by version and sha512) for
# the test that opens a county study in it over DICOMweb; npm comes from Debian if missing.
ohif:
	@command -v npm >/dev/null || { $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq npm; }
	@bash tests/ohif/install.sh

# PostgreSQL and RabbitMQ run on the machine already; start them if they have stopped.
services:
	@bash deploy/dev/ensure-services.sh

run: install
	$(BIN)/relay up --demo

test: dev peers services ohif typecheck imports lint-js
	$(BIN)/python -m pytest $(PYTEST_ARGS)

typecheck: dev
	$(BIN)/mypy --strict --ignore-missing-imports relay reader_portal

# The layering (pyproject.toml's [tool.importlinter]): no import cycles, edge and county
# independent, relay.dicom below both, the portal above the county.
imports: dev
	$(BIN)/lint-imports --no-cache

# ESLint (pinned in package.json / package-lock.json, from the npm registry only) over the
# portal's browser code in reader_portal/static; Node and npm are Debian's if missing.
node_modules/.installed: package.json package-lock.json
	@command -v npm >/dev/null || { $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq npm; }
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

lint-js: node_modules/.installed
	npx --no-install eslint eslint.config.js reader_portal/static

# Orthanc (bench/ingest.py's peer) is one of APT_PEERS now: the interop tests send with it.
bench-peers: peers

bench: dev bench-peers
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) var .pytest_cache test-artifacts node_modules
