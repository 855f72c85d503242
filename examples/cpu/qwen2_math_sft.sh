#!/usr/bin/env bash
# CoT-SFT of a tiny random-init Qwen2 on the synthetic arithmetic set (configs/sft_math.yaml), 2 Ray workers
# on CPU, merged into a Hugging Face model at $OUT/model: the first stage of qwen2_math_sft_then_grpo.sh.
# Extra key=value arguments override the SFT config.
set -euo pipefail
cd "$(dirname "$0")/../.."
PYTHON=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
MODEL_PATH=${MODEL_PATH:-assets/tiny-qwen2}
DATA_DIR=${DATA_DIR:-assets/math}
OUT=${OUT:-runs/qwen2_math_sft}

[ -f "$MODEL_PATH/config.json" ] || "$PYTHON" -m longrl.models.tiny qwen2 --out "$MODEL_PATH"
[ -f "$DATA_DIR/train.jsonl" ] || "$PYTHON" -m longrl.data.synthetic math --out "$DATA_DIR"

"$PYTHON" -m longrl.trainer.sft \
    config=configs/sft_math.yaml \
    data.train_files="$DATA_DIR/train.jsonl" \
    data.val_files="$DATA_DIR/val.jsonl" \
    worker.actor.model.model_path="$MODEL_PATH" \
    trainer.save_checkpoint_path="$OUT/sft" \
    "$@"
actor="$OUT/sft/global_step_$(cat "$OUT/sft/latest_checkpointed_iteration.txt")/actor"
"$PYTHON" scripts/model_merger.py --local_dir "$actor"
ln -sfn "$(cd "$actor/huggingface" && pwd)" "$OUT/model"
