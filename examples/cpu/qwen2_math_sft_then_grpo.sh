#!/usr/bin/env bash
# Two stages on the synthetic arithmetic set, 2 Ray workers on CPU: CoT-SFT of a tiny random-init
# Qwen2 (configs/sft_math.yaml), merge, evaluate; GRPO from the merged SFT model (configs/cpu_math.yaml),
# merge, evaluate. Extra key=value arguments override the GRPO config (e.g. trainer.max_steps=20);
# SFT_ARGS="key=value ..." overrides the SFT config. Results: $OUT/eval_sft, $OUT/eval_grpo.
set -euo pipefail
cd "$(dirname "$0")/../.."
PYTHON=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
MODEL_PATH=${MODEL_PATH:-assets/tiny-qwen2}
DATA_DIR=${DATA_DIR:-assets/math}
OUT=${OUT:-runs/qwen2_math_sft_then_grpo}
SFT_ARGS=${SFT_ARGS:-}
EVAL_LIMIT=${EVAL_LIMIT:-}  # evaluate only the first N validation questions

[ -f "$MODEL_PATH/config.json" ] || "$PYTHON" -m longrl.models.tiny qwen2 --out "$MODEL_PATH"
[ -f "$DATA_DIR/train.jsonl" ] || "$PYTHON" -m longrl.data.synthetic math --out "$DATA_DIR"

latest_actor() {  # the actor directory of a run's latest checkpoint
    echo "$1/global_step_$(cat "$1/latest_checkpointed_iteration.txt")/actor"
}

evaluate() {  # model dir, output dir
    "$PYTHON" eval/eval.py --model-path "$1" --data-path "$DATA_DIR/val.jsonl" --output-dir "$2" \
        --format-prompt examples/format_prompt/math.jinja --max-new-tokens 32 --dtype fp32 \
        ${EVAL_LIMIT:+--limit "$EVAL_LIMIT"}
}

# shellcheck disable=SC2086  # SFT_ARGS is a list of key=value words
PYTHON=$PYTHON MODEL_PATH=$MODEL_PATH DATA_DIR=$DATA_DIR OUT=$OUT bash examples/cpu/qwen2_math_sft.sh $SFT_ARGS
SFT_ACTOR=$(latest_actor "$OUT/sft")
evaluate "$SFT_ACTOR/huggingface" "$OUT/eval_sft"

"$PYTHON" -m longrl.trainer.main \
    config=configs/cpu_math.yaml \
    data.train_files="$DATA_DIR/train.jsonl" \
    data.val_files="$DATA_DIR/val.jsonl" \
    worker.actor.model.model_path="$SFT_ACTOR/huggingface" \
    trainer.save_checkpoint_path="$OUT/grpo" \
    "$@"
GRPO_ACTOR=$(latest_actor "$OUT/grpo")
"$PYTHON" scripts/model_merger.py --local_dir "$GRPO_ACTOR"
evaluate "$GRPO_ACTOR/huggingface" "$OUT/eval_grpo"
