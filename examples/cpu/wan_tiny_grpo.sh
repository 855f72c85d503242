#!/usr/bin/env bash
# Flow-GRPO with a tiny random-init Wan 2.1 (9-frame videos), 2 Ray workers on CPU.
# Extra key=value arguments override the config. Needs diffusers and accelerate (`pip install longrl[diffusion]`).
set -euo pipefail
cd "$(dirname "$0")/../.."
PYTHON=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
MODEL_PATH=${MODEL_PATH:-assets/tiny-wan}

[ -f "$MODEL_PATH/model_index.json" ] || "$PYTHON" -m longrl.diffusion.tiny wan --out "$MODEL_PATH"

"$PYTHON" -m longrl.trainer.main \
    config=configs/cpu_wan.yaml \
    worker.actor.model.model_path="$MODEL_PATH" \
    "$@"
