# Two commands set up a fresh machine: `make demo` and `make test`.
# Both install what they need into .venv (main) and .venv-triton (the
# isolated Triton host: numpy<2, onnxruntime, nvidia-pytriton). Re-runs are
# fast: the install steps are stamped on the files they depend on.

PY ?= python3
VENV := .venv
TRITON_VENV := .venv-triton
CHECKOV_VENV := .venv-checkov
CHECKOV_VERSION := 3.3.30
TORCHREC_VERSION := 1.8.0
export OMP_WAIT_POLICY ?= PASSIVE

.PHONY: demo test test-unit install clean stack-down help

help:
	@echo "make demo   - fetch data, build features, train DLF, export, start Triton + gateway, score users"
	@echo "make test   - install everything and run unit + integration tests"

$(VENV)/.installed: pyproject.toml
	test -x $(VENV)/bin/python || $(PY) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[train,dev]'
	$(VENV)/bin/pip install -q --no-deps torchrec==$(TORCHREC_VERSION)
	touch $@

$(TRITON_VENV)/.installed: serving/triton_requirements.txt
	test -x $(TRITON_VENV)/bin/python || $(PY) -m venv $(TRITON_VENV)
	$(TRITON_VENV)/bin/pip install -q --upgrade pip
	$(TRITON_VENV)/bin/pip install -q -r serving/triton_requirements.txt
	touch $@

# checkov (the chart's security scan in tests/helm) pins packages that would downgrade the main venv
$(CHECKOV_VENV)/.installed: Makefile
	test -x $(CHECKOV_VENV)/bin/python || $(PY) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/pip install -q --upgrade pip
	$(CHECKOV_VENV)/bin/pip install -q checkov==$(CHECKOV_VERSION)
	touch $@

install: $(VENV)/.installed $(TRITON_VENV)/.installed $(CHECKOV_VENV)/.installed

demo: install
	$(VENV)/bin/recast demo

test: install
	$(VENV)/bin/python -m pytest -q tests

test-unit: install
	$(VENV)/bin/python -m pytest -q tests/unit

stack-down:
	-$(VENV)/bin/recast stack down

clean:
	rm -rf artifacts
