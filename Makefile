# Two entry points for newcomers: `make demo` and `make test` (see README.md).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# A second venv with the oldest allowed version of every dependency (constraints/minimum.txt).
MIN_VENV := .venv-min
MIN_STAMP := $(MIN_VENV)/.installed

.PHONY: demo test test-min lint unit bench soak deps venv clean

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

$(MIN_STAMP): pyproject.toml constraints/minimum.txt
	rm -rf $(MIN_VENV)
	$(PY) -m venv $(MIN_VENV)
	$(MIN_VENV)/bin/pip install -q --upgrade pip
	$(MIN_VENV)/bin/pip install -q -c constraints/minimum.txt -e '.[test]'
	touch $(MIN_STAMP)

# The unit and loopback tests on the minimum versions: proves the floors in pyproject.toml.
test-min: deps $(MIN_STAMP)
	$(MIN_VENV)/bin/pytest -q -ra -m 'not netns'

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
	$(MAKE) test-min

bench: deps venv
	$(BIN)/python -m bench.failover

# The 2 % packet-loss soak alone (300 s by default; --soak SECONDS to change).
soak: deps venv
	$(BIN)/python -m bench.failover --only soak

clean:
	rm -rf $(VENV) $(MIN_VENV) .pytest_cache .mypy_cache .ruff_cache
