# Corral: the few entry points used locally and by .ci/run.
#   make up      install everything (first time) and run server + local agent
#   make test    install everything (first time) and run the whole test suite
#   make check   format, lint, types, import layering, OpenAPI drift
#   make bench   benchmarks (print figures; no asserts)
#   make gen     regenerate docs/openapi.json

VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: setup up test test-unit check bench gen clean

setup:
	@scripts/setup

up: setup
	@scripts/ensure-libvirtd || echo "libvirtd unavailable: corral up will use the simulator"
	@scripts/ensure-ovs || echo "Open vSwitch unavailable: VMs with NICs cannot start"
	$(VENV)/bin/corral up $(UP_ARGS)

# CORRAL_NO_SKIP: in `make test` (and so in CI) a skipped test is a failure, never a silent pass
test: setup
	@scripts/ensure-libvirtd
	@scripts/ensure-ovs
	CORRAL_TEST_IMAGE=$$(scripts/build-test-image | tail -n 1) CORRAL_NO_SKIP=1 \
		$(PY) -m pytest $(PYTEST_ARGS)

test-unit: setup
	$(PY) -m pytest tests/unit $(PYTEST_ARGS)

check: setup
	$(VENV)/bin/ruff format --check src tests bench
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports
	$(PY) -m corral.server.openapi --check docs/openapi.json

gen: setup
	$(PY) -m corral.server.openapi --write docs/openapi.json

bench: setup
	@scripts/ensure-libvirtd
	@scripts/build-test-image >/dev/null
	$(PY) bench/run.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
