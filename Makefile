# Two commands on a fresh machine:  `make demo`  and  `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# PostgreSQL for the test suite; `make test` uses it when it answers.
PG_URL ?= postgresql+psycopg://postgres@127.0.0.1:5432/test
DEMO_DB ?= $(CURDIR)/.demo/queue.db

.PHONY: install demo lint test test-fast bench bench-fleet soak man clean

$(VENV)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# A regular (non-editable) install: proves the package builds, with its migrations and man page.
	$(PY) -m pip install -q '.[postgres,test,web]'
	touch $@

install: $(VENV)/.installed

demo: install
	rm -rf $(dir $(DEMO_DB)) && mkdir -p $(dir $(DEMO_DB))
	QUEUECTL_DB=$(DEMO_DB) bash examples/demo.sh $(VENV)/bin/queuectl

# ruff over the code, tests, benchmarks and migrations; mypy over the package
# (settings in pyproject.toml). `make test` runs it first.
lint: install
	$(VENV)/bin/ruff check queuectl tests bench migrations
	$(VENV)/bin/mypy

# Both backends when PostgreSQL answers (QUEUECTL_TEST_PG_URL), else SQLite only;
# pytest's last lines say which backends ran.
test: install lint
	@if [ -z "$$QUEUECTL_TEST_PG_URL" ] && $(PY) -c "import sqlalchemy as s; s.create_engine('$(PG_URL)').connect().close()" 2>/dev/null; then \
		export QUEUECTL_TEST_PG_URL='$(PG_URL)'; fi; \
	$(PY) -m pytest $(PYTEST_ARGS)

# The benchmark suite (bench/run.py; never part of `make test`): both backends when
# PostgreSQL answers at PG_URL. BENCH_ARGS=--quick for a smoke run. task-spooler (tsp)
# is the peer it is compared with.
bench: install
	command -v tsp >/dev/null || (apt-get update -qq && apt-get install -y -qq task-spooler)
	QUEUECTL_BENCH_PG_URL='$(PG_URL)' $(PY) bench/run.py $(BENCH_ARGS)

# Issue #18's simulated fleet: 10 pools x 10 slots with distinct hostnames on one PostgreSQL database.
bench-fleet: install
	QUEUECTL_BENCH_PG_URL='$(PG_URL)' $(PY) bench/fleet.py $(BENCH_ARGS)

man: install
	man -l $(VENV)/share/man/man1/queuectl.1

clean:
	rm -rf $(VENV) build man *.egg-info .demo .pytest_cache .mypy_cache .ruff_cache
