#!/usr/bin/env bash
# GRPO with LoRA adapters (rank 8 on every linear layer) on the tiny random-init Qwen2, 2 Ray workers on CPU:
# only the adapters train and are checkpointed, the reference is the base model (adapters disabled), vLLM gets
# the merged weights. Extra key=value arguments override the config, e.g. trainer.max_steps=5.
set -euo pipefail
cd "$(dirname "$0")/../.."
PYTHON=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
MODEL_PATH=${MODEL_PATH:-assets/tiny-qwen2}
DATA_DIR=${DATA_DIR:-assets/math}

[ -f "$MODEL_PATH/config.json" ] || "$PYTHON" -m longrl.models.tiny qwen2 --out "$MODEL_PATH"
[ -f "$DATA_DIR/train.jsonl" ] || "$PYTHON" -m longrl.data.synthetic math --out "$DATA_DIR"

# LoRA learns with a larger step than full fine-tuning: its update is scaled by alpha / rank
"$PYTHON" -m longrl.trainer.main \
    config=configs/cpu_math.yaml \
    data.train_files="$DATA_DIR/train.jsonl" \
    data.val_files="$DATA_DIR/val.jsonl" \
    worker.actor.model.model_path="$MODEL_PATH" \
    worker.actor.model.lora.rank=8 \
    worker.actor.model.lora.alpha=16 \
    worker.actor.model.lora.target_modules=all-linear \
    worker.actor.optim.lr=1.0e-3 \
    trainer.experiment_name=qwen2_math_lora_grpo_cpu \
    trainer.save_checkpoint_path=runs/qwen2_math_lora_grpo \
    "$@"
