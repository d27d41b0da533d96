# Two commands on a fresh machine: `make run` and `make test`.
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
JARS   := jars/.resolved

.PHONY: run test test-all setup jars clean lint

run: setup
	$(VENV)/bin/recunlearn run

test: setup
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

test-all: setup
	$(PY) -m pytest $(PYTEST_ARGS)

lint: setup
	$(VENV)/bin/lint-imports

setup: $(STAMP) $(JARS)

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON) (Python 3.11)"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $@

# Delta Lake's jars from Maven Central into jars/ (git-ignored), passed to Spark as spark.jars.
$(JARS): build-support/delta-jars.pom.xml
	mvn -q -B -f build-support/delta-jars.pom.xml dependency:copy-dependencies
	touch $@

clean:
	rm -rf var jars $(VENV) *.egg-info lib/*.egg-info
