# make run  - install, migrate, collect static files, serve with gunicorn on 127.0.0.1:$(PORT)
# make test - install, make sure PostgreSQL and Redis are up, run the whole test suite

PYTHON ?= python3
VENV ?= .venv
PORT ?= 8011
BIN := $(VENV)/bin
TEST_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/sessions
TEST_REDIS_URL ?= redis://127.0.0.1:6379/0

export PORT

.PHONY: run test install install-dev services browser lint bench screenshots clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Reinstall only when a lock file changes.
$(VENV)/.installed-run: requirements.lock | $(BIN)/python
	$(BIN)/pip install --quiet -r requirements.lock
	touch $@

$(VENV)/.installed-dev: requirements-dev.lock | $(BIN)/python
	$(BIN)/pip install --quiet -r requirements-dev.lock
	touch $@ $(VENV)/.installed-run

install: $(VENV)/.installed-run
install-dev: $(VENV)/.installed-dev

run: install
	$(BIN)/python manage.py migrate --noinput
	$(BIN)/python manage.py collectstatic --noinput --verbosity 0
	exec $(BIN)/gunicorn -c gunicorn.conf.py

services:
	bash scripts/ensure-services.sh

browser:
	bash scripts/ensure-browser.sh

test: install-dev services browser
	$(BIN)/ruff check .
	DATABASE_URL=$(TEST_DATABASE_URL) REDIS_URL=$(TEST_REDIS_URL) $(BIN)/pytest $(PYTEST_ARGS)

# Refresh docs/screenshots/ (the browser tests take them).
screenshots: install-dev services browser
	SAVE_SCREENSHOTS=1 DATABASE_URL=$(TEST_DATABASE_URL) REDIS_URL=$(TEST_REDIS_URL) $(BIN)/pytest -m browser

lint: install-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

bench: install-dev services
	DATABASE_URL=$(TEST_DATABASE_URL) REDIS_URL=$(TEST_REDIS_URL) $(BIN)/python bench/run.py

clean:
	rm -rf $(VENV) staticfiles .pytest_cache
