# make test   : install what the tests need (Podman via apt, venv) and run them all
# make unit   : the fast tests only (no engine)
# make lint   : ruff, and the import-linter layer contracts (pyproject.toml)
# make bench  : the benchmarks (see docs/performance.md)
.PHONY: test unit lint bench setup

PYTEST_ARGS ?=

test:
	@conf=$$(bash scripts/test-setup) && \
	  .venv/bin/ruff check -q agentsh tests bench && { out=$$(.venv/bin/lint-imports 2>&1) || { echo "$$out"; exit 1; }; } && \
	  CONTAINERS_CONF=$$conf AGENTSH_REQUIRE_ENGINE=$${AGENTSH_REQUIRE_ENGINE:-$${CI:+1}} \
	  .venv/bin/python -m pytest -q $(PYTEST_ARGS)

unit:
	@bash scripts/test-setup >/dev/null && .venv/bin/python -m pytest -q tests/unit $(PYTEST_ARGS)

lint:
	@bash scripts/test-setup >/dev/null && .venv/bin/ruff check agentsh tests bench && .venv/bin/lint-imports

bench:
	@conf=$$(bash scripts/test-setup) && CONTAINERS_CONF=$$conf .venv/bin/python bench/run.py
