VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: test demo install clean

# --no-compile: pip would byte-compile every module of the torch wheel (~40 s of CPU on a 2-core VM, inside the
# demo's 15 minutes); Python compiles only the modules it imports, when it first imports them.
$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --no-compile --disable-pip-version-check -c constraints.txt -e ".[test,demo]"
	touch $(STAMP)

install: $(STAMP)

# The browser test (tests/test_browser.py) drives Debian's chromium through Playwright; no browser is downloaded.
CHROMIUM := /usr/bin/chromium
$(CHROMIUM):
	@if [ "$$(id -u)" = 0 ]; then apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium; \
	else echo "make: the browser test needs Debian's chromium: sudo apt-get install chromium" >&2; exit 1; fi

test: $(STAMP) $(CHROMIUM)
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks
	$(PY) -m pytest -q

demo: $(STAMP)
	$(VENV)/bin/blip demo --out runs/demo

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache
