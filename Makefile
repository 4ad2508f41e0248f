# Two commands for a fresh machine: `make demo` and `make test`.
# Both set up .venv/ first. torch==2.13.0 is installed before the project:
# on these machines that pins the CPU build on disk; letting the project's
# range pick a torch would pull a multi-GB CUDA build. Where pip finds no CPU
# build by itself, name PyTorch's CPU index:
#   make TORCH_PIP_ARGS='--index-url https://download.pytorch.org/whl/cpu' test

PYTHON ?= python3
TORCH_PIP_ARGS ?=
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

# Programs the integration tests run for real (they start their own instances).
SYSTEM_TOOLS := mosquitto mosquitto_pub mosquitto_sub mosquitto_passwd openssl prometheus promtool
SYSTEM_PACKAGES := mosquitto mosquitto-clients openssl prometheus

.PHONY: setup system-deps demo test lint typecheck unit fuzz clean

setup: $(STAMP)

system-deps:
	@missing=""; for tool in $(SYSTEM_TOOLS); do \
	  command -v $$tool >/dev/null 2>&1 || [ -x /usr/sbin/$$tool ] || missing="$$missing $$tool"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing$$missing (Debian packages: $(SYSTEM_PACKAGES))"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi; \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq $(SYSTEM_PACKAGES) \
	    || { echo "cannot install$$missing: install $(SYSTEM_PACKAGES) yourself"; exit 1; }; \
	fi

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.13.0 $(TORCH_PIP_ARGS)
	$(BIN)/pip install --quiet -e '.[dev]'
	$(BIN)/sensorcast precompile  # the kernels now, so a first demo or replay does not wait
	touch $(STAMP)

demo: setup
	$(BIN)/sensorcast demo $(ARGS)

lint: setup
	$(BIN)/ruff check --no-cache .  # a stale cache has hidden findings before

typecheck: setup
	$(BIN)/mypy

unit: setup system-deps
	$(BIN)/pytest

test: lint typecheck unit

# Ten times the fuzz tests' inputs (over 10^6, some minutes); `make test` runs 10^5.
fuzz: setup
	HYPOTHESIS_PROFILE=fuzz $(BIN)/pytest tests/fuzz tests/connectors/test_payloads.py tests/connectors/test_topics.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis
