"""Worker kinds: what the one RL loop needs to know about a model family's data, workers and rewards.

The kind is chosen from the model directory, not from a flag: a diffusers pipeline (model_index.json) trains with
the diffusion worker, any other checkpoint with the hybrid language-model worker. Each kind gives the loop its data
rows, the Ray worker class (both expose the same verbs), the reward function's per-sample inputs and a short text
per sample for the logged generations. Everything else in `RayTrainer.step` is shared.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from PIL import Image

from longrl.config import Config
from longrl.data.dataset import RLDataset, check_media
from longrl.data.prompts import load_prompts
from longrl.models.adapter import media_of, tokenizer_dir
from longrl.models.vision_cache import has_media
from longrl.protocol import Batch
from longrl.registry import Registry
from longrl.workers.micro_batches import row_tokens
from longrl.workers.rollout.base import SamplingSpec


class WorkerKind(Protocol):
    train_set: Sequence[dict[str, Any]]
    val_set: Sequence[dict[str, Any]] | None
    prompt_column: str
    """The batch column holding each prompt's text (for the logged generations)."""

    def worker_class(self) -> type:
        """The Ray worker class (imported when chosen: the diffusion worker needs the optional diffusers)."""

    def reward_inputs(self, batch: Batch) -> list[dict[str, Any]]:
        """Per sample, what the reward function receives."""

    def describe(self, batch: Batch) -> list[str]:
        """Per sample, the text shown in the logged generations."""

    def row_costs(self, batch: Batch) -> list[int] | None:
        """Per sample, the work it costs a rank (for balancing the ranks under dynamic batching); None when the
        samples must stay on the ranks that made them."""

    rollout_unit: str
    """What the rollout splits over the data-parallel ranks: 'prompt' (each rank samples n responses to its
    prompts, so the prompts must divide by the ranks) or 'sample' (each sample is placed by itself, and a step's
    samples need not divide by the ranks: Dispatch.SPLIT_SAMPLES). Read by validate and `rollout_rows`."""

    def rollout_rows(self, prompts: Batch, spec: SamplingSpec) -> tuple[Batch, SamplingSpec]:
        """The rows and spec the worker group's `generate` takes for `spec.n` samples of each prompt."""


WORKER_KINDS: Registry[Callable[[Config], WorkerKind]] = Registry("worker kind (from worker.actor.model.model_path)")


def kind_name(model_path: str) -> str:
    """The kind of a model directory: `diffusion` for a diffusers pipeline directory, else `language`."""
    return "diffusion" if Path(model_path, "model_index.json").is_file() else "language"


def worker_kind(cfg: Config) -> WorkerKind:
    """The kind of worker.actor.model.model_path, built (its data loaded)."""
    return WORKER_KINDS[kind_name(cfg.worker.actor.model.model_path)](cfg)


@WORKER_KINDS.register("language")
class LanguageKind:
    """Language and vision-language models: tokenised prompts, text responses decoded for the reward."""

    prompt_column = "prompt_text"
    rollout_unit = "prompt"

    def __init__(self, cfg: Config):
        from transformers import AutoTokenizer

        model = cfg.worker.actor.model
        self.reward_cfg = cfg.worker.reward
        self.tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir(model.model_path, model.tokenizer_path))
        self.train_set = RLDataset(cfg.data.train_files, cfg.data, self.tokenizer)
        self.val_set = RLDataset(cfg.data.val_files, cfg.data, self.tokenizer, config_key="data.val_files") \
            if cfg.data.val_files else None
        limits = {"images": cfg.worker.rollout.limit_images, "videos": cfg.worker.rollout.limit_videos}
        for data, key in ((self.train_set, "data.train_files"), (self.val_set, "data.val_files")):
            if data is not None:
                check_media(data, model.model_path, limits, key, media_of(model.model_path))

    def worker_class(self) -> type:
        from longrl.workers.fsdp_worker import HybridWorker

        return HybridWorker

    def rollout_rows(self, prompts: Batch, spec: SamplingSpec) -> tuple[Batch, SamplingSpec]:
        return prompts, spec  # vLLM samples a prompt's n responses together (one prefill)

    def row_costs(self, batch: Batch) -> list[int] | None:
        # rows with images or videos stay on the rank whose VisionCache decoded and encoded their media this step
        return None if has_media(batch) else row_tokens(batch)

    def describe(self, batch: Batch) -> list[str]:
        lengths = batch["response_mask"].sum(-1).tolist()
        return self.tokenizer.batch_decode([r[:n] for r, n in zip(batch["responses"].tolist(), lengths)],
                                           skip_special_tokens=self.reward_cfg.skip_special_tokens)

    def reward_inputs(self, batch: Batch) -> list[dict[str, Any]]:
        texts = self.describe(batch)
        extra_keys = [k for k in ("problem_type", "problem") if k in batch]
        return [{"response": t, "response_length": int(n), "ground_truth": gt, **{k: batch[k][i] for k in extra_keys}}
                for i, (t, n, gt) in enumerate(zip(texts, batch["response_mask"].sum(-1).tolist(),
                                                   batch["ground_truth"]))]


@WORKER_KINDS.register("diffusion")
class DiffusionKind:
    """Diffusers pipelines (SD3 images, Wan videos): prompt files in, decoded images or frames to the reward."""

    prompt_column = "prompt"
    rollout_unit = "sample"

    def __init__(self, cfg: Config):
        self.train_set = load_prompts(cfg.data.train_files, cfg.data)
        self.val_set = load_prompts(cfg.data.val_files, cfg.data, "data.val_files") if cfg.data.val_files else None

    def worker_class(self) -> type:
        from longrl.diffusion.worker import DiffusionWorker

        return DiffusionWorker

    def row_costs(self, batch: Batch) -> None:
        return None  # each sample's latents stay on the worker that sampled it

    def rollout_rows(self, prompts: Batch, spec: SamplingSpec) -> tuple[Batch, SamplingSpec]:
        # one row per sample, numbered within its prompt's group: Long-RL's 1-2 prompts x n images spread over
        # all the ranks (a sample's noise is seeded by its uid and number, so the placement changes nothing)
        samples = prompts.repeat(spec.n)
        samples["sample"] = [j for _ in range(len(prompts)) for j in range(spec.n)]
        return samples, dataclasses.replace(spec, n=1)

    def describe(self, batch: Batch) -> list[str]:
        what = "video" if batch["decoded"].ndim == 5 else "image"
        return [f"<{what} {'x'.join(map(str, batch['decoded'].shape[1:]))}> {p}" for p in batch["prompt"]]

    def reward_inputs(self, batch: Batch) -> list[dict[str, Any]]:
        pixels = batch["decoded"].numpy()
        inputs = []
        for i, (prompt, metadata) in enumerate(zip(batch["prompt"], batch["metadata"])):
            sample = {"prompt": prompt, "metadata": metadata, "ground_truth": metadata.get("answer")}
            if pixels.ndim == 5:  # [B, F, 3, H, W]
                sample["frames"] = [Image.fromarray(np.ascontiguousarray(f.transpose(1, 2, 0))) for f in pixels[i]]
            else:
                sample["image"] = Image.fromarray(np.ascontiguousarray(pixels[i].transpose(1, 2, 0)))
            inputs.append(sample)
        return inputs
