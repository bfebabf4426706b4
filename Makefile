# The two set-up commands of the README: `make demo` (workflow on the embedded default) and `make test`.
VENV := .venv
STAMP := $(VENV)/.installed

.PHONY: demo test env

env: $(STAMP)

$(STAMP): scripts/setup_env.sh requirements.txt requirements-dev.txt pyproject.toml
	bash scripts/setup_env.sh
	touch $@

demo: $(STAMP)
	$(VENV)/bin/snakemake --profile profiles/demo all

# Two pytest-xdist workers; --dist loadfile keeps each test file on one worker, so a module's fixtures (the
# tiny workflow run of tests/test_workflow_e2e.py) are built once.
test: $(STAMP)
	$(VENV)/bin/pytest -q -n 2 --dist loadfile
