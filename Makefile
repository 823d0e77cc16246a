# Two entry points for newcomers: `make demo` and `make test` (see README.md).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint unit bench soak deps venv clean

# Debian packages the demo and the namespace tests need (root only; skipped otherwise).
deps:
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  need=""; command -v ip >/dev/null || need="$$need iproute2"; \
	  command -v nft >/dev/null || need="$$need nftables"; \
	  if [ -n "$$need" ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$need; fi; \
	fi

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $(STAMP)

venv: $(STAMP)

demo: deps venv
	$(BIN)/havip demo

lint: venv
	$(BIN)/ruff check havip tests bench
	$(BIN)/ruff format --check havip tests bench
	$(BIN)/mypy

unit: venv
	$(BIN)/pytest -q -m 'not netns'

test: deps venv lint
	$(BIN)/pytest -q -ra

bench: deps venv
	$(BIN)/python -m bench.failover

# The 10-minute 2 % packet-loss soak alone.
soak: deps venv
	$(BIN)/python -m bench.failover --only soak

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
