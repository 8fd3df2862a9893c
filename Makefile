# medialog — two commands: `make run` (embedded stack, all roles) and `make test` (the suite).
# Both install what is missing first: a .venv (rebuilt when pyproject.toml changes) and, when
# running as root on Debian, ffmpeg and PostgreSQL from the distribution's packages.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell sha1sum pyproject.toml | cut -c1-12)

.PHONY: run test lint bench setup system-deps schemas clean

run: setup
	$(BIN)/medialog dev

test: setup lint
	$(BIN)/python -m pytest -p no:cacheprovider $(PYTEST_ARGS)

lint: setup
	$(BIN)/python -m ruff check src streams projections tests bench
	$(BIN)/python -m mypy src/medialog streams projections

setup: system-deps $(STAMP)

system-deps:
	@bash scripts/system-deps.sh

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[embedded,test]'
	@rm -f $(VENV)/.installed-* && touch $@

schemas: setup
	$(BIN)/medialog schemas --write

bench: setup
	$(BIN)/python bench/signing.py; \
	$(BIN)/python bench/transcode.py; \
	$(BIN)/python bench/projections.py; \
	$(BIN)/python bench/ingest.py; \
	$(BIN)/python bench/consume.py; \
	$(BIN)/python bench/memory.py; \
	$(BIN)/python bench/soak.py

clean:
	@# PostgreSQL's cluster lives outside the data dir when root's checkout is private
	@if [ -f .medialog/postgres.location ]; then rm -rf "$$(cat .medialog/postgres.location)"; fi
	rm -rf $(VENV) .medialog
