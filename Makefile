# Two commands on a fresh machine with Python 3.11+ and make: `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
UV_VERSION := 0.13.8

.PHONY: install run test lint openapi bench worker migrate clean

$(BIN)/tandem: pyproject.toml uv.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check uv==$(UV_VERSION)
	UV_PROJECT_ENVIRONMENT=$(VENV) $(BIN)/uv sync --frozen --quiet
	touch $@

install: $(BIN)/tandem

# API and a worker in one process, on SQLite under .tandem/ and a private Redis.
run: install
	TANDEM_WEBHOOK_ALLOW_PRIVATE=$${TANDEM_WEBHOOK_ALLOW_PRIVATE:-1} \
	TANDEM_ACTION_NETWORKS=$${TANDEM_ACTION_NETWORKS:-all} $(BIN)/tandem serve

migrate: install
	$(BIN)/tandem migrate

worker: install
	$(BIN)/tandem worker

lint: install
	$(BIN)/ruff check app tests bench alembic examples
	$(BIN)/ruff format --check app tests bench alembic examples
	$(BIN)/mypy app

# The suite runs once per database backend this machine has: PostgreSQL (when it is
# reachable, or when TANDEM_TEST_REQUIRE_SERVICES=1) and always SQLite; the slowest tests
# of each pass are listed at its end.
test: install lint
	@for db in $$($(BIN)/python -m tests.backends); do \
	  echo "=== test suite on $$db ==="; \
	  TANDEM_TEST_DB=$$db $(BIN)/pytest -q -p no:cacheprovider -n 2 --dist loadgroup --durations=15 || exit 1; \
	done

openapi: install
	$(BIN)/python -m app.openapi > openapi/openapi.json

bench: install
	$(BIN)/python -m bench.run

clean:
	rm -rf $(VENV) .tandem
