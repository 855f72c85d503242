#!/usr/bin/env bash
# GRPO with a tiny random-init Qwen2.5-VL on synthetic CLEVR-style scenes (PNG files of coloured shapes:
# how many shapes, how many of a colour, which colour is left of a shape), 2 Ray workers on CPU, a few
# minutes. Each image is encoded once per step by the actor's vision tower and the embeddings are reused
# by vLLM's n samples, the old/ref log-probs and the update, as videos are.
#   MULTI_IMAGE=1: two images per question ("in which image are there more circles?").
# Extra key=value arguments override the config, e.g. worker.rollout.cache_video_embeds=false.
set -euo pipefail
cd "$(dirname "$0")/../.."
PYTHON=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
MODEL_PATH=${MODEL_PATH:-assets/tiny-qwen2_5_vl}
MULTI_IMAGE=${MULTI_IMAGE:-0}
if [[ $MULTI_IMAGE == 1 ]]; then DATA_DIR=${DATA_DIR:-assets/clevr_multi}; else DATA_DIR=${DATA_DIR:-assets/clevr}; fi
multi=()
[[ $MULTI_IMAGE == 1 ]] && multi=(--multi-image)

[ -f "$MODEL_PATH/config.json" ] || "$PYTHON" -m longrl.models.tiny_vl --out "$MODEL_PATH"
[ -f "$DATA_DIR/train.jsonl" ] || "$PYTHON" -m longrl.data.synthetic clevr --out "$DATA_DIR" \
    --n-train 64 --n-val 8 "${multi[@]}"

"$PYTHON" -m longrl.trainer.main \
    config=configs/cpu_video.yaml \
    data.train_files="$DATA_DIR/train.jsonl" \
    data.val_files="$DATA_DIR/val.jsonl" \
    data.image_key=images \
    data.max_prompt_length=512 \
    worker.actor.model.model_path="$MODEL_PATH" \
    worker.rollout.limit_images=2 \
    worker.rollout.limit_videos=0 \
    worker.actor.share_prompt_prefix=true \
    trainer.experiment_name=qwen2_5_vl_image_grpo_cpu \
    trainer.save_checkpoint_path=runs/qwen2_5_vl_image_grpo \
    "$@"
