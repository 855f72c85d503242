#!/usr/bin/env bash
# GPU smoke run: one command for a person with one GPU, after `make install`; finishes in under 8 minutes.
# Runs tests/gpu (3 GRPO steps of the tiny Qwen2 and of the tiny Qwen2.5-VL on one GPU in bf16 with vLLM asleep
# during training, trainer vs vLLM log-probs in bf16, flash-attn), then prints what they measured: GPU memory in
# use with the engine awake vs asleep, the weight-sync time and megabytes, and the step time.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}

if ! nvidia-smi -L >/dev/null 2>&1; then
    echo "gpu_smoke: no NVIDIA GPU is visible (nvidia-smi -L failed); the CPU suite is \`make test\`" >&2
    exit 1
fi
nvidia-smi -L

log=$(mktemp)
trap 'rm -f "$log"' EXIT
start=$(date +%s)
status=0
timeout 470 env PYTHONPATH="$PWD" "$PY" -m pytest -q -s -rs -m gpu tests/gpu --timeout=460 2>&1 | tee "$log" \
    || status=$?

echo
echo "== gpu_smoke: $(( $(date +%s) - start )) s =="
grep "^GPU-SMOKE" "$log" || echo "no measurements: see the test output above"
exit "$status"
