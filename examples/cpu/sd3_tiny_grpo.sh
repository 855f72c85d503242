#!/usr/bin/env bash
# Flow-GRPO with a tiny random-init SD3 and the JPEG-compressibility reward, 2 Ray workers on CPU.
# Extra key=value arguments override the config, e.g. trainer.max_steps=5, or the Fast window:
#   worker.rollout.sde_window_size=2 worker.rollout.sde_window_range=[0,5]
set -euo pipefail
cd "$(dirname "$0")/../.."
PYTHON=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
MODEL_PATH=${MODEL_PATH:-assets/tiny-sd3}

[ -f "$MODEL_PATH/model_index.json" ] || "$PYTHON" -m longrl.diffusion.tiny sd3 --out "$MODEL_PATH"

"$PYTHON" -m longrl.trainer.main \
    config=configs/cpu_sd3.yaml \
    worker.actor.model.model_path="$MODEL_PATH" \
    "$@"
