VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: test demo install clean

# Byte-compiled once here, in parallel, instead of by pip one file at a time: these VMs set
# PYTHONDONTWRITEBYTECODE=1, so a module Python compiles on import is never cached and every process (each CLI
# call, each spawned worker) would compile torch, timm and transformers again: 15 s to start `blip` instead of 6.
$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --no-compile --disable-pip-version-check -c constraints.txt -e ".[test,demo]"
	$(PY) -m compileall -q -j 0 -x '/tests?/|/testing/_internal/' "$$($(PY) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')" src >/dev/null
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
