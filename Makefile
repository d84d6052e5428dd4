# make reproduce  - set up .venv if needed, run the pre-flight check, then notebooks 01-05 on $(PROFILE) (default: smoke)
# make check      - the pre-flight check alone: is every input of $(PROFILE) there?
# make test       - set up .venv if needed, then the test suite (unit tests, the smoke pipeline, a paper-shaped dry run)
# make lab        - set up .venv if needed, then JupyterLab on notebooks/ with the project's kernel (toolsft-repro)
PROFILE ?= smoke
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# Only the paper profile touches the hub: the others fail at once instead of waiting on time-outs.
ifneq ($(PROFILE),paper)
OFFLINE := HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
endif

.PHONY: setup reproduce check test lab bench clean
KERNEL := $(VENV)/share/jupyter/kernels/toolsft-repro/kernel.json
setup: $(VENV)/.installed $(KERNEL)

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $@

# The notebooks' kernel: this .venv's Python, by name, so JupyterLab opens them with it selected.
$(KERNEL): $(VENV)/.installed
	$(PY) -m ipykernel install --sys-prefix --name toolsft-repro --display-name "toolsft-repro (.venv)" > /dev/null

reproduce: setup
	$(OFFLINE) $(PY) -m lib.run --profile $(PROFILE) $(ARGS)

check: setup
	$(OFFLINE) $(PY) -m lib.run --profile $(PROFILE) --check $(ARGS)

test: setup
	HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 $(PY) -m pytest $(ARGS)

lab: setup
	$(OFFLINE) $(VENV)/bin/jupyter lab --notebook-dir=notebooks

clean:
	rm -rf outputs/smoke outputs/test-*
