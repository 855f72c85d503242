#!/usr/bin/env bash
# The arguments longvila_7b_video_grpo.sh and nvila_2b_video_grpo.sh share (Long-RL's two scripts differ in the
# model, the frame count and tokens_per_frame only). Not meant to be run directly: they export MODEL_PATH,
# EXPERIMENT_NAME, NUM_VIDEO_FRAMES, TOKENS_PER_FRAME and VIDEO_PATH.
set -euo pipefail
cd "$(dirname "$0")/../.."
: "${MODEL_PATH:?run longvila_7b_video_grpo.sh or nvila_2b_video_grpo.sh}"
PYTHON=${PYTHON:-python3}
args=(
    config=configs/long_rl.yaml
    data.train_files="${TRAIN_FILES:-LongVideo-Reason/longvideo-reason@train}"
    data.val_files="${VAL_FILES:-LongVideo-Reason/longvideo-reason@validation}"
    data.video_dir="$VIDEO_PATH"
    data.format_prompt=examples/format_prompt/r1v.jinja
    data.vila_model=true
    worker.vila_model=true
    worker.actor.ulysses_size="${ULYSSES_SIZE:-4}"
    worker.actor.model.model_path="$MODEL_PATH"
    worker.rollout.num_video_frames="$NUM_VIDEO_FRAMES"
    worker.rollout.tokens_per_frame="$TOKENS_PER_FRAME"
    worker.rollout.max_num_batched_tokens=$((NUM_VIDEO_FRAMES * TOKENS_PER_FRAME + 8192))
    worker.reward.reward_type=sequential
    worker.reward.reward_function=examples/reward_function/r1v.py:compute_score
    trainer.experiment_name="$EXPERIMENT_NAME"
    trainer.nnodes="${NNODES:-1}"
    trainer.n_gpus_per_node="${N_GPUS_PER_NODE:-8}"
    trainer.val_before_train=false
    trainer.val_freq=-1
    "$@"
)
if [[ ${DRY_RUN:-0} == 1 ]]; then
    exec "$PYTHON" -c 'import json, sys
from longrl.config import ConfigError, load_config, to_dict
try:
    print(json.dumps(to_dict(load_config(sys.argv[1:])), indent=2))
except ConfigError as e:
    sys.exit(f"error: {e}")' "${args[@]}"
fi
exec "$PYTHON" -m longrl.trainer.main "${args[@]}"
