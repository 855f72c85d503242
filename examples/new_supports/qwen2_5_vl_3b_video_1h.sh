#!/usr/bin/env bash
# Hour-long videos: GRPO on LongVideo-Reason with Qwen2.5-VL-3B-Instruct at 3,600 frames (~216k video
# tokens) on one 8-GPU node, Ulysses sequence parallel over all 8 GPUs: Long-RL's script of this name.
# Arguments and environment as in qwen2_5_vl_3b_video_grpo.sh; the batch grows with NNODES (8 prompts
# per node), as there.
#
#   bash examples/new_supports/qwen2_5_vl_3b_video_1h.sh VIDEO_PATH [key=value ...]
#
# Left out of Long-RL's command line: `num_video_frames=$1` (a bug there: it overwrites 3600 with the
# video directory); worker.rollout.tokens_per_frame and num_chunk_seq (its VILA rollout's keys: here the
# token budget follows data.max_pixels, see qwen2_5_vl_3b_video_grpo.sh); trainer.load_checkpoint_path=
# checkpoints/easy_r1/<experiment> (a run resumes from its latest checkpoint in that folder by itself).
set -euo pipefail
video=()  # VIDEO_PATH stays first; the user's key=value arguments come last, so they win
if [[ $# -gt 0 && $1 != *=* ]]; then video=("$1"); shift; fi
prompts=$((8 * ${NNODES:-1}))
NUM_VIDEO_FRAMES=${NUM_VIDEO_FRAMES:-3600} ULYSSES_SIZE=${ULYSSES_SIZE:-8} \
EXPERIMENT_NAME=${EXPERIMENT_NAME:-qwen2_5_vl_3b_video_1h} exec bash "$(dirname "$0")/qwen2_5_vl_3b_video_grpo.sh" "${video[@]}" \
    data.num_workers=1 \
    data.rollout_batch_size="$prompts" \
    worker.actor.global_batch_size="$prompts" \
    worker.actor.micro_batch_size_per_device_for_update=1 \
    worker.actor.micro_batch_size_per_device_for_experience=1 \
    worker.rollout.max_num_batched_tokens=256000 \
    worker.rollout.gpu_memory_utilization=0.4 \
    trainer.total_epochs=1 \
    "$@"
