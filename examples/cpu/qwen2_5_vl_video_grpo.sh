#!/usr/bin/env bash
# GRPO with a tiny random-init Qwen2.5-VL on synthetic 64-frame videos (LongVideo-Reason-style
# multiple choice), 2 Ray workers on CPU. Each video is encoded once per step by the actor's vision
# tower and the embeddings are reused by vLLM's n samples, the old/ref log-probs and the update;
# with share_prompt_prefix each prompt runs once per micro-batch and its n responses reuse its KV cache.
# Extra key=value arguments override the config, e.g. worker.rollout.cache_video_embeds=false.
set -euo pipefail
cd "$(dirname "$0")/../.."
PYTHON=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
MODEL_PATH=${MODEL_PATH:-assets/tiny-qwen2_5_vl}
DATA_DIR=${DATA_DIR:-assets/video}
NUM_FRAMES=${NUM_FRAMES:-64}

[ -f "$MODEL_PATH/config.json" ] || "$PYTHON" -m longrl.models.tiny_vl --out "$MODEL_PATH"
[ -f "$DATA_DIR/train.jsonl" ] || "$PYTHON" -m longrl.data.synthetic_video --out "$DATA_DIR" \
    --frames "$NUM_FRAMES" --n-train 32 --n-val 8 --n-test 8

"$PYTHON" -m longrl.trainer.main \
    config=configs/cpu_video.yaml \
    data.train_files="$DATA_DIR/train.jsonl" \
    data.val_files="$DATA_DIR/val.jsonl" \
    worker.actor.model.model_path="$MODEL_PATH" \
    worker.rollout.num_video_frames="$NUM_FRAMES" \
    worker.actor.share_prompt_prefix=true \
    "$@"
