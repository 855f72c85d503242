#!/usr/bin/env bash
# GRPO with a tiny random-init Qwen2 on the synthetic arithmetic set, 2 Ray workers on CPU.
# Extra key=value arguments override the config, e.g. trainer.max_steps=5.
set -euo pipefail
cd "$(dirname "$0")/../.."
PYTHON=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
MODEL_PATH=${MODEL_PATH:-assets/tiny-qwen2}
DATA_DIR=${DATA_DIR:-assets/math}

[ -f "$MODEL_PATH/config.json" ] || "$PYTHON" -m longrl.models.tiny qwen2 --out "$MODEL_PATH"
[ -f "$DATA_DIR/train.jsonl" ] || "$PYTHON" -m longrl.data.synthetic math --out "$DATA_DIR"

"$PYTHON" -m longrl.trainer.main \
    config=configs/cpu_math.yaml \
    data.train_files="$DATA_DIR/train.jsonl" \
    data.val_files="$DATA_DIR/val.jsonl" \
    worker.actor.model.model_path="$MODEL_PATH" \
    "$@"
