# Two entry points for newcomers: `make demo` and `make test` (see README.md).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# A second venv with the oldest allowed version of every dependency (constraints/minimum.txt).
MIN_VENV := .venv-min
MIN_STAMP := $(MIN_VENV)/.installed

.PHONY: demo test test-min lint unit bench soak deps venv clean install uninstall

# Debian packages the demo and the namespace tests need (root only; skipped otherwise).
# prometheus gives promtool (tests/test_prometheus.py checks deploy/prometheus/) and the server
# the lab test runs in a namespace (tests/test_prometheus_e2e.py). Without its recommended
# node exporter; a service the package itself started is stopped and disabled again: the tests
# start their own, nothing listens on the host.
deps:
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  need=""; command -v ip >/dev/null || need="$$need iproute2"; \
	  command -v nft >/dev/null || need="$$need nftables"; \
	  command -v promtool >/dev/null && command -v prometheus >/dev/null || need="$$need prometheus"; \
	  if [ -n "$$need" ]; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$need; \
	    case "$$need" in *prometheus*) if [ -d /run/systemd/system ]; then \
	      systemctl disable --now prometheus.service >/dev/null 2>&1 || true; fi ;; esac; \
	  fi; \
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

# --- make install / make uninstall (docs/INSTALL.md) ------------------------------------------
# A virtualenv in $(OPTDIR) with the havip command linked into $(BINDIR); the man page, bash
# completion and docs; on Linux the systemd unit and sysusers file, on illumos the SMF manifest
# and method script. Nothing is enabled or started. DESTDIR stages everything elsewhere (for
# packaging); the venv is then rewritten to run from $(OPTDIR).
#   WHEEL=dist/havip-X-py3-none-any.whl   install that wheel instead of building this checkout
#   PIP_FLAGS="--no-index --find-links DIR"   e.g. offline from a folder of wheels
PREFIX ?= /usr/local
OPTDIR ?= /opt/havip
BINDIR ?= $(PREFIX)/bin
MANDIR ?= $(PREFIX)/share/man
DOCDIR ?= $(PREFIX)/share/doc/havip
BASHCOMPDIR ?= /usr/share/bash-completion/completions
UNITDIR ?= /etc/systemd/system
SYSUSERSDIR ?= /etc/sysusers.d
SMFMANIFESTDIR ?= /lib/svc/manifest/site
SMFMETHODDIR ?= /lib/svc/method
WHEEL ?=
PIP_FLAGS ?=
OS ?= $(shell uname -s)
ifeq ($(OS),SunOS)
# PyPI has no illumos wheels of cryptography: the venv sees OmniOS's own python-3 packages
# (cryptography, and pip itself: the venv needs no ensurepip).
# illumos' install(1M) takes other options: GNU install is ginstall (file/gnu-coreutils).
VENV_FLAGS ?= --system-site-packages --without-pip
INSTALL ?= ginstall
else
VENV_FLAGS ?=
INSTALL ?= install
endif
OPT_PY := $(DESTDIR)$(OPTDIR)/bin/python

install:
	@case "$(OPTDIR)" in /?*) ;; *) echo "OPTDIR must be an absolute folder, not '$(OPTDIR)'" >&2; exit 2 ;; esac
	test -x $(OPT_PY) || $(PY) -m venv $(VENV_FLAGS) $(DESTDIR)$(OPTDIR)
	@# pip keeps an installed havip of the same version: remove it, so a rebuilt checkout lands.
	PIP_DISABLE_PIP_VERSION_CHECK=1 $(OPT_PY) -m pip uninstall -q -y havip 2>/dev/null || true
	PIP_DISABLE_PIP_VERSION_CHECK=1 $(OPT_PY) -m pip install -q --upgrade $(PIP_FLAGS) $(if $(WHEEL),$(WHEEL),.)
	@# Under DESTDIR the venv's scripts name $(DESTDIR)$(OPTDIR): make them name $(OPTDIR).
	@if [ -n "$(DESTDIR)" ]; then \
	  for f in $(DESTDIR)$(OPTDIR)/bin/* $(DESTDIR)$(OPTDIR)/pyvenv.cfg; do \
	    if [ -f "$$f" ] && [ ! -L "$$f" ] && grep -q "$(DESTDIR)$(OPTDIR)" "$$f" 2>/dev/null; then \
	      sed "s|$(DESTDIR)$(OPTDIR)|$(OPTDIR)|g" "$$f" > "$$f.tmp" && cat "$$f.tmp" > "$$f" && rm -f "$$f.tmp"; \
	    fi; \
	  done; \
	fi
	$(INSTALL) -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(MANDIR)/man1 $(DESTDIR)$(BASHCOMPDIR) $(DESTDIR)$(DOCDIR)
	ln -sf $(OPTDIR)/bin/havip $(DESTDIR)$(BINDIR)/havip
	$(OPT_PY) -m havip.manpage --prefix "$(PREFIX)" > $(DESTDIR)$(MANDIR)/man1/havip.1
	$(OPT_PY) -m havip.completion bash > $(DESTDIR)$(BASHCOMPDIR)/havip
	chmod 0644 $(DESTDIR)$(MANDIR)/man1/havip.1 $(DESTDIR)$(BASHCOMPDIR)/havip
	$(INSTALL) -m 0644 README.md docs/INSTALL.md $(DESTDIR)$(DOCDIR)/
ifeq ($(OS),SunOS)
	$(INSTALL) -d $(DESTDIR)$(SMFMANIFESTDIR) $(DESTDIR)$(SMFMETHODDIR)
	sed -e 's|/usr/local/bin/havip|$(BINDIR)/havip|g' deploy/smf/havip-method > $(DESTDIR)$(SMFMETHODDIR)/havip
	chmod 0555 $(DESTDIR)$(SMFMETHODDIR)/havip
	sed -e 's|/usr/local/bin/havip|$(BINDIR)/havip|g' -e 's|/usr/local/share/doc/havip|$(DOCDIR)|g' \
	  -e "s|manpath='/usr/local/share/man'|manpath='$(MANDIR)'|" deploy/smf/havip.xml > $(DESTDIR)$(SMFMANIFESTDIR)/havip.xml
	chmod 0444 $(DESTDIR)$(SMFMANIFESTDIR)/havip.xml
	@echo "installed; next: svccfg import $(SMFMANIFESTDIR)/havip.xml (see $(DOCDIR)/INSTALL.md)"
else
	$(INSTALL) -d $(DESTDIR)$(UNITDIR) $(DESTDIR)$(SYSUSERSDIR)
	sed -e 's|/usr/local/bin/havip|$(BINDIR)/havip|g' -e 's|/usr/local/share/doc/havip|$(DOCDIR)|g' \
	  deploy/havip.service > $(DESTDIR)$(UNITDIR)/havip.service
	chmod 0644 $(DESTDIR)$(UNITDIR)/havip.service
	$(INSTALL) -m 0644 deploy/sysusers.d/havip.conf $(DESTDIR)$(SYSUSERSDIR)/havip.conf
	@# On the live system: create the havip user now and let systemd see the unit (not enabled).
	@if [ -z "$(DESTDIR)" ]; then \
	  if command -v systemd-sysusers >/dev/null; then systemd-sysusers $(SYSUSERSDIR)/havip.conf; fi; \
	  if [ -d /run/systemd/system ]; then systemctl daemon-reload; fi; \
	fi
	@echo "installed; next: /etc/havip, then systemctl enable --now havip (see $(DOCDIR)/INSTALL.md)"
endif

# Removes what `make install` put in place; keeps /etc/havip (config and keys), /var/lib/havip
# (state) and the havip user. On the live system the service is stopped first (SIGTERM: a
# planned handover to the peer).
uninstall:
	@case "$(OPTDIR)" in /?*) ;; *) echo "OPTDIR must be an absolute folder, not '$(OPTDIR)'" >&2; exit 2 ;; esac
ifeq ($(OS),SunOS)
	@if [ -z "$(DESTDIR)" ] && svcs havip >/dev/null 2>&1; then \
	  svcadm disable -s havip; svccfg delete havip; \
	fi
	rm -f $(DESTDIR)$(SMFMANIFESTDIR)/havip.xml $(DESTDIR)$(SMFMETHODDIR)/havip
else
	@if [ -z "$(DESTDIR)" ] && [ -d /run/systemd/system ]; then \
	  systemctl disable --now havip 2>/dev/null || true; \
	fi
	rm -f $(DESTDIR)$(UNITDIR)/havip.service $(DESTDIR)$(SYSUSERSDIR)/havip.conf
	@if [ -z "$(DESTDIR)" ] && [ -d /run/systemd/system ]; then systemctl daemon-reload; fi
endif
	rm -f $(DESTDIR)$(BINDIR)/havip $(DESTDIR)$(MANDIR)/man1/havip.1 $(DESTDIR)$(BASHCOMPDIR)/havip
	rm -f $(DESTDIR)$(DOCDIR)/README.md $(DESTDIR)$(DOCDIR)/INSTALL.md
	rmdir $(DESTDIR)$(DOCDIR) 2>/dev/null || true
	rm -rf $(DESTDIR)$(OPTDIR)
	@echo "uninstalled; kept /etc/havip, /var/lib/havip and the havip user (remove them by hand)"
