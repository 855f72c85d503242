#!/usr/bin/env bash
# GRPO with LoRA adapters (rank 8 on every linear layer) on the tiny random-init Qwen2, 2 Ray workers on CPU:
# only the adapters train and are checkpointed, the reference is the base model (adapters disabled), vLLM gets
# the merged weights. The tiny CPU math setup of qwen2_math_grpo.sh; extra key=value arguments override the
# config, e.g. trainer.max_steps=5.
set -euo pipefail
# LoRA learns with a larger step than full fine-tuning: its update is scaled by alpha / rank
exec bash "$(dirname "$0")/qwen2_math_grpo.sh" \
    worker.actor.model.lora.rank=8 \
    worker.actor.model.lora.alpha=16 \
    worker.actor.model.lora.target_modules=all-linear \
    worker.actor.optim.lr=1.0e-3 \
    trainer.experiment_name=qwen2_math_lora_grpo_cpu \
    trainer.save_checkpoint_path=runs/qwen2_math_lora_grpo \
    "$@"
