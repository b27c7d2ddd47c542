# Set-up is part of every target: a fresh clone needs only `make app` or `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed

.PHONY: app test test-fast lint release bench system-packages

# The repository goes on the venv's path (a .pth file, as an editable install does), so that
# .venv/bin/python -m models.predict and `from models import Predictor` work from any folder.
$(INSTALLED): requirements.txt Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements.txt
	$(BIN)/python -c "import pathlib, sys, sysconfig; pathlib.Path(sysconfig.get_path('purelib'), 'mitosis-benchmark.pth').write_text(sys.argv[1] + '\n')" "$(CURDIR)"
	touch $@

release: $(INSTALLED)
	$(BIN)/python -m evaluation.release --if-missing

# The shipped model is evaluated before serving (once per checkpoint and label set), so the
# board shows it from the first page view.
app: release
	$(BIN)/python -m worker --prepare
	$(BIN)/python app.py

lint: $(INSTALLED)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# Debian's chromium (browser tests), postgresql and redis-server (the tests start their own
# servers on loopback, in temporary folders; never the system services).
system-packages:
	@command -v chromium >/dev/null && command -v redis-server >/dev/null && ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium postgresql redis-server; }

# The whole suite; `test-fast` leaves out the tests marked slow (see docs/development.md).
test: lint system-packages
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest --durations=25

test-fast: lint system-packages
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest --durations=25 -m "not slow"

bench: release
	$(BIN)/python -m bench.scoring
	$(BIN)/python -m bench.predict
	$(BIN)/python -m bench.backend
	$(BIN)/python -m bench.app
	$(BIN)/python -m bench.uploads
