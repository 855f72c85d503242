#!/usr/bin/env bash
# GRPO on LongVideo-Reason with Qwen2.5-VL-3B-Instruct on one 8-GPU node, Ulysses sequence parallel 4:
# Long-RL's examples/new_supports/qwen2_5_vl_3b_video_grpo.sh, same arguments and hyper-parameters
# (configs/long_rl.yaml is Long-RL's examples/config.yaml).
#
#   bash examples/new_supports/qwen2_5_vl_3b_video_grpo.sh VIDEO_PATH [key=value ...]
#
# VIDEO_PATH (first argument, or environment): the directory that the dataset's video paths are relative to.
# MODEL_PATH [Qwen/Qwen2.5-VL-3B-Instruct]: a local model directory or a hub id (downloaded once, on the
#   driver, before the workers start).
# Optional environment, defaults in brackets:
#   TRAIN_FILES / VAL_FILES [LongVideo-Reason/longvideo-reason@train / @validation]
#   NUM_VIDEO_FRAMES [32]   ULYSSES_SIZE [4]   N_GPUS_PER_NODE [8]   EXPERIMENT_NAME [qwen2_5_vl_3b_video_grpo]
#   NNODES [1]: set by scripts/train_multi_nodes.sh (trainer.nnodes)
#   PYTHON [python3]   DRY_RUN=1: print the effective config and exit
# Extra key=value arguments override any key (see configs/config.yaml).
set -euo pipefail
cd "$(dirname "$0")/../.."
if [[ $# -gt 0 && $1 != *=* ]]; then VIDEO_PATH=$1; shift; fi
: "${VIDEO_PATH:?set VIDEO_PATH (first argument or environment) to the directory holding the videos}"
MODEL_PATH=${MODEL_PATH:-Qwen/Qwen2.5-VL-3B-Instruct}
PYTHON=${PYTHON:-python3}
NUM_VIDEO_FRAMES=${NUM_VIDEO_FRAMES:-32}
EXPERIMENT_NAME=${EXPERIMENT_NAME:-qwen2_5_vl_3b_video_grpo}
tokens_per_frame=60

# Long-RL sizes video frames with qwen_vl_utils to about tokens_per_frame tokens each and keeps
# data.max_pixels (4194304 in its config) for images; longrl sizes frames by data.max_pixels, so it is
# set to what 60 tokens a frame take: Qwen2.5-VL makes one token of each 28x28 block of a pair of frames.
args=(
    config=configs/long_rl.yaml
    data.train_files="${TRAIN_FILES:-LongVideo-Reason/longvideo-reason@train}"
    data.val_files="${VAL_FILES:-LongVideo-Reason/longvideo-reason@validation}"
    data.video_dir="$VIDEO_PATH"
    data.format_prompt=examples/format_prompt/r1v.jinja
    data.max_pixels=$((tokens_per_frame * 2 * 28 * 28))
    worker.actor.padding_free=true
    worker.actor.ulysses_size="${ULYSSES_SIZE:-4}"
    worker.actor.model.model_path="$MODEL_PATH"
    worker.rollout.num_video_frames="$NUM_VIDEO_FRAMES"
    worker.rollout.max_num_batched_tokens=$((NUM_VIDEO_FRAMES * tokens_per_frame + 8192))
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
