# Two commands do all the set-up on a machine with only Python 3.11+ (and make):
#   make run        serve the API (embedded PostgreSQL + console e-mail when unconfigured)
#   make test       lint, type-check and run the whole test suite
#   make test-fast  ruff and the tests that need no database, browser or process (seconds)
#   make screenshot refresh docs/dashboard.png (the suite itself never writes into the tree)
#   make fuzz       schemathesis against a real service process, far longer than in `make test`
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# What is installed: the runtime dependencies and the embedded PostgreSQL
# (make run), or the development tools as well (everything else). The
# container image installs the runtime dependencies alone.
RUN_STAMP := $(VENV)/.installed-run
STAMP     := $(VENV)/.installed-dev

.PHONY: run test test-fast fuzz screenshot lint install bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(RUN_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[embedded]'
	touch $(RUN_STAMP)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev,embedded]'
	touch $(STAMP) $(RUN_STAMP)

install: $(STAMP)

run: $(RUN_STAMP)
	$(BIN)/python -m service

lint: $(STAMP)
	$(BIN)/ruff check service tests bench
	$(BIN)/ruff format --check service tests bench
	$(BIN)/mypy
	$(BIN)/lint-imports

# Branch coverage of the whole suite, the service processes of the e2e tests
# included ([tool.coverage.run] in pyproject.toml): 97 % in total, and no file
# under 90 % (coverage.py has no per-file gate; tests/support/coverage_floor.py).
COVERAGE_TOTAL_FLOOR := 97
COVERAGE_FILE_FLOOR  := 90

test: lint
	$(BIN)/python -m pytest --cov=service --cov-branch --cov-report=term:skip-covered \
		--cov-fail-under=$(COVERAGE_TOTAL_FLOOR)
	$(BIN)/python -m tests.support.coverage_floor $(COVERAGE_FILE_FLOOR)

# The edit loop: no PostgreSQL (not even an embedded one), no chromium, no
# service process; markers come from the fixtures a test uses (tests/conftest.py).
test-fast: $(STAMP)
	$(BIN)/ruff check service tests bench
	$(BIN)/python -m pytest -q -m "not db and not browser and not e2e"

# The schemathesis test of `make test` (25 examples per operation and phase,
# fixed seed) with many more examples; FUZZ_EXAMPLES and FUZZ_SEED change them.
FUZZ_EXAMPLES ?= 500
FUZZ_SEED     ?= 20261128
fuzz: $(STAMP)
	SCHEMATHESIS_MAX_EXAMPLES=$(FUZZ_EXAMPLES) SCHEMATHESIS_SEED=$(FUZZ_SEED) \
		SCHEMATHESIS_TIMEOUT=3600 \
		$(BIN)/python -m pytest -q -s tests/e2e/test_schemathesis.py

# The README's picture of the dashboard: the browser tour, saved into docs/.
screenshot: $(STAMP)
	$(BIN)/python -m pytest -q tests/dashboard/test_browser.py::test_tour_screenshot \
		--dashboard-screenshot=$(CURDIR)/docs/dashboard.png

# Benchmarks against baselines run in the same session (docs/BENCHMARKS.md).
# They need wrk (apt-get install wrk) for the API benchmark.
bench: $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[dev,embedded,bench]'
	$(BIN)/python -m bench.api
	$(BIN)/python -m bench.delivery
	$(BIN)/python -m bench.memory

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
