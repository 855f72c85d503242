#!/usr/bin/env bash
# GRPO with a tiny random-init VILA (SigLIP + mlp_downsample_2x2_fix + Qwen2, VILA's checkpoint layout) on
# synthetic 16-frame videos, 2 Ray workers on CPU. Each frame is encoded once per step (4 tokens + the newline);
# vLLM runs the language model (llm/) fed prompt embeddings mixed with token ids, so text and the per-frame
# newlines use the live embedding table. Extra key=value arguments override the config, e.g.
# worker.rollout.max_frames_vllm=8 (the rollout sees every other frame, the trainer all).
set -euo pipefail
cd "$(dirname "$0")/../.."
PYTHON=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
MODEL_PATH=${MODEL_PATH:-assets/tiny-vila}
DATA_DIR=${DATA_DIR:-assets/video16}
NUM_FRAMES=${NUM_FRAMES:-16}

[ -f "$MODEL_PATH/config.json" ] || "$PYTHON" -m longrl.models.tiny_vila --out "$MODEL_PATH"
[ -f "$DATA_DIR/train.jsonl" ] || "$PYTHON" -m longrl.data.synthetic_video --out "$DATA_DIR" \
    --frames "$NUM_FRAMES" --n-train 32 --n-val 8 --n-test 8

"$PYTHON" -m longrl.trainer.main \
    config=configs/cpu_video.yaml \
    data.train_files="$DATA_DIR/train.jsonl" \
    data.val_files="$DATA_DIR/val.jsonl" \
    data.vila_model=true \
    worker.vila_model=true \
    worker.actor.model.model_path="$MODEL_PATH" \
    worker.rollout.num_video_frames="$NUM_FRAMES" \
    worker.rollout.tokens_per_frame=5 \
    trainer.experiment_name=vila_video_grpo_cpu \
    trainer.save_checkpoint_path=runs/vila_video_grpo \
    "$@"
