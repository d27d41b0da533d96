# Two commands on a fresh machine: `make run` and `make test`.
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
JARS   := jars/.resolved

.PHONY: run test test-all setup jars clean lint browser

run: setup
	$(VENV)/bin/recunlearn run

test: setup browser
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

test-all: setup browser
	$(PY) -m pytest $(PYTEST_ARGS)

# The habits CI keeps: the import contracts (layers, no cycles), ruff (pyflakes, pycodestyle,
# isort, bugbear, annotations; formatting) and mypy on the library, pipelines and jobs.
lint: setup
	$(VENV)/bin/lint-imports
	$(VENV)/bin/ruff check lib pipelines jobs tests
	$(VENV)/bin/ruff format --check lib pipelines jobs tests
	$(VENV)/bin/mypy lib pipelines jobs

setup: $(STAMP) $(JARS)

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON) (Python 3.11)"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev,bench]"
	touch $@

# Delta Lake's jars from Maven Central into jars/ (git-ignored), passed to Spark as spark.jars.
$(JARS): build-support/delta-jars.pom.xml
	mvn -q -B -f build-support/delta-jars.pom.xml dependency:copy-dependencies
	touch $@

# Debian's Chromium for the report's headless-browser test, when this machine can install it
# (root and apt-get); otherwise that one test skips and says why.
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    (timeout 900 apt-get update -qq && DEBIAN_FRONTEND=noninteractive timeout 900 \
	      apt-get install -y -qq chromium >/dev/null) \
	    || echo "could not install chromium: the browser check will skip"; \
	  else echo "chromium not installed (needs root and apt-get): the browser check will skip"; fi; }

clean:
	rm -rf var jars $(VENV) *.egg-info lib/*.egg-info
