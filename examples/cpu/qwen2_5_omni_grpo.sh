#!/usr/bin/env bash
# GRPO with a tiny random-init Qwen2.5-Omni thinker on synthetic audio-visual clips (beeps, pitch, coloured
# squares; examples answerable only by listening), 2 Ray workers on CPU. vLLM samples with each video's own
# audio interleaved (use_audio_in_video) and the trainer's log-probs hear the same audio.
# Extra key=value arguments override the config.
set -euo pipefail
cd "$(dirname "$0")/../.."
PYTHON=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
MODEL_PATH=${MODEL_PATH:-assets/tiny-qwen2_5_omni}
DATA_DIR=${DATA_DIR:-assets/av}

[ -f "$MODEL_PATH/config.json" ] || "$PYTHON" -m longrl.models.tiny_omni --out "$MODEL_PATH"
[ -f "$DATA_DIR/train.jsonl" ] || "$PYTHON" -m longrl.data.synthetic_av --out "$DATA_DIR" \
    --n-train 32 --n-val 8 --n-test 8

"$PYTHON" -m longrl.trainer.main \
    config=configs/cpu_omni.yaml \
    data.train_files="$DATA_DIR/train.jsonl" \
    data.val_files="$DATA_DIR/val.jsonl" \
    worker.actor.model.model_path="$MODEL_PATH" \
    "$@"
