# Two commands a fresh machine needs: `make demo` and `make test`. Both bootstrap .venv.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: venv test lint demo bench clean

venv: $(STAMP)

# Re-install only when setup.py changes; otherwise `make venv` is a no-op.
$(STAMP): setup.py
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[test]"
	@touch $(STAMP)

test: venv
	$(PY) -m pytest -q --durations=15 tests

lint: venv
	$(VENV)/bin/ruff check .

demo: venv
	$(PY) -m serving.demo --output_dir demo_out --overwrite

bench: venv
	$(PY) -m benchmarks.preprocess
	$(PY) -m benchmarks.input_pipeline
	$(PY) -m benchmarks.train_step
	$(PY) -m benchmarks.scoring
	$(PY) -m benchmarks.quality
	$(PY) -m benchmarks.detectors
	$(PY) -m benchmarks.screening

clean:
	rm -rf $(VENV) demo_out .pytest_cache
