"""Chain-of-thought SFT, the stage before RL: `python3 -m longrl.trainer.sft config=configs/sft_video.yaml`.

Same data, config schema, workers and checkpoints as RL. Each row's target response is
`data.sft_response_template` rendered over the row's fields (by default
`<think>{{ reasoning }}</think><answer>{{ answer }}</answer>`) plus EOS; the loss is the mean NLL of
the target tokens only. Keys used: data.* (files, prompt rendering, lengths, shuffle, seed),
worker.actor.global_batch_size (rows per optimizer step), worker.actor.micro_batch_size_per_device_*,
worker.actor.optim.* (lr, warmup, decay), worker.actor.max_grad_norm, trainer.total_epochs /
max_steps, trainer.val_freq (validation loss), trainer.save_* (the last step is always saved).

RL then starts from the merged checkpoint:
    python3 scripts/model_merger.py --local_dir runs/sft/global_step_N/actor
    python3 -m longrl.trainer.main ... worker.actor.model.model_path=runs/sft/global_step_N/actor/huggingface
"""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

import jinja2
import torch
from tqdm import tqdm

from longrl.config import Config, ConfigError, checkpoint_dir, dp_size, load_config, to_dict, world_size
from longrl.data.dataset import PromptLoader, RLDataset, check_media, rows_to_batch
from longrl.eval.answers import reference_answer
from longrl.models.adapter import media_of, tokenizer_dir
from longrl.protocol import Batch

logger = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------
# targets
# ---------------------------------------------------------------------------------------------
def response_template(text: str) -> jinja2.Template:
    """The target template; `{{ x | boxed }}` writes `\\boxed{x}`, and a missing field is an error."""
    env = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=False)
    env.filters["boxed"] = lambda value: "\\boxed{" + str(value) + "}"
    try:
        return env.from_string(text)
    except jinja2.TemplateSyntaxError as e:
        raise ConfigError(f"data.sft_response_template={text!r} is not a valid Jinja template: {e}") from None


def with_targets(dataset: RLDataset, cfg: Config, tokenizer: Any, key: str = "data.train_files") -> list[dict]:
    """The dataset's items plus `target_ids` (the rendered response tokens + EOS).

    Rows whose target is longer than data.max_response_length are dropped (logged) or, with
    data.filter_overlong_prompts=false, refused.
    """
    data = cfg.data
    template = response_template(data.sft_response_template)
    items, too_long = [], []
    for item in dataset.items:
        row = dict(dataset.rows[item["row"]])
        row["answer"] = reference_answer(str(row[data.answer_key]))
        try:
            text = template.render(**row)
        except jinja2.UndefinedError as e:
            raise ConfigError(f"{key}: row {item['row']} cannot fill data.sft_response_template ({e}); the rows have "
                              f"fields {sorted(row)}: add the field to the data or change the template") from None
        ids = tokenizer(text, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        if len(ids) > data.max_response_length:
            if not data.filter_overlong_prompts:
                raise ConfigError(f"{key}: row {item['row']} has a {len(ids)}-token target, more than "
                                  f"data.max_response_length={data.max_response_length}; raise the limit or set "
                                  f"data.filter_overlong_prompts=true to drop such rows")
            too_long.append(item["row"])
            continue
        items.append({**item, "target_ids": ids, "target_text": text})
    if too_long:
        logger.warning("%s: dropped %d of %d rows whose target exceeds data.max_response_length=%d (first: row %d)",
                       key, len(too_long), len(dataset.items), data.max_response_length, too_long[0])
    if not items:
        raise ConfigError(f"{key}: no row has a target within data.max_response_length={data.max_response_length}")
    return items


def sft_batch(rows: Batch, pad_id: int) -> Batch:
    """Rows with `target_ids` -> the same rows with `responses` [B, R] (targets, right-padded with pad_id) and
    `response_mask` [B, R] instead of the target columns."""
    targets = list(rows["target_ids"])
    keep = [k for k in rows.objects if k not in ("target_ids", "target_text")]
    batch = Batch(objects={k: rows.objects[k] for k in keep}, meta=dict(rows.meta))
    width = max(len(t) for t in targets)
    responses = torch.full((len(targets), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(targets), width), dtype=torch.long)
    for i, target in enumerate(targets):
        responses[i, : len(target)] = torch.tensor(target)
        mask[i, : len(target)] = 1
    batch.tensors.update(responses=responses, response_mask=mask)
    return batch


# ---------------------------------------------------------------------------------------------
# checks
# ---------------------------------------------------------------------------------------------
def validate_sft(cfg: Config, model_max_positions: int | None = None) -> None:
    """Raise one ConfigError listing every problem of an SFT config (the RL-only keys are not checked)."""
    problems = []
    actor, data, t = cfg.worker.actor, cfg.data, cfg.trainer
    if not actor.model.model_path or not Path(actor.model.model_path).is_dir():
        problems.append(f"worker.actor.model.model_path={actor.model.model_path!r} is not a local directory; point "
                        f"it at a Hugging Face model directory on disk")
    if not data.train_files:
        problems.append("data.train_files is empty; set it to a json/jsonl/parquet file or name@split")
    world = world_size(cfg)
    if actor.ulysses_size < 1 or world % actor.ulysses_size:
        problems.append(f"worker.actor.ulysses_size={actor.ulysses_size} must divide the world size {world}")
    else:
        dp = dp_size(cfg)
        if actor.global_batch_size % dp:
            problems.append(f"worker.actor.global_batch_size={actor.global_batch_size} (rows per SFT step) must be "
                            f"divisible by the data-parallel size {dp}")
        elif (actor.global_batch_size // dp) % actor.micro_batch_size_per_device_for_update:
            problems.append(f"worker.actor.micro_batch_size_per_device_for_update="
                            f"{actor.micro_batch_size_per_device_for_update} must divide the rows per device and "
                            f"step, global_batch_size/dp = {actor.global_batch_size // dp}")
    if model_max_positions is not None and data.max_prompt_length + data.max_response_length > model_max_positions:
        problems.append(f"data.max_prompt_length + data.max_response_length = "
                        f"{data.max_prompt_length + data.max_response_length} exceeds the model's "
                        f"max_position_embeddings={model_max_positions}; lower one of them")
    unknown = set(t.logger) - {"console", "file", "wandb", "tensorboard"}
    if unknown:
        problems.append(f"trainer.logger has unknown entries {sorted(unknown)}; choose from console, file, "
                        f"tensorboard, wandb")
    if problems:
        raise ConfigError("invalid SFT configuration:\n  - " + "\n  - ".join(problems))


# ---------------------------------------------------------------------------------------------
# the loop
# ---------------------------------------------------------------------------------------------
class SFTTrainer:
    """Driver: data, targets, steps, validation loss, checkpoints; the workers hold the model."""

    def __init__(self, cfg: Config):
        from transformers import AutoTokenizer

        from longrl.checkpoint.manager import CheckpointManager

        self.cfg = cfg
        model = cfg.worker.actor.model
        self.tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir(model.model_path, model.tokenizer_path))
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None \
            else self.tokenizer.eos_token_id
        train = RLDataset(cfg.data.train_files, cfg.data, self.tokenizer)
        check_media(train, model.model_path, media=media_of(model.model_path))  # SFT needs no rollout engine: only the model's own limits
        self.train_items = with_targets(train, cfg, self.tokenizer)
        self.val_items = None
        if cfg.data.val_files:
            val = RLDataset(cfg.data.val_files, cfg.data, self.tokenizer, config_key="data.val_files")
            check_media(val, model.model_path, key="data.val_files", media=media_of(model.model_path))
            self.val_items = with_targets(val, cfg, self.tokenizer, "data.val_files")
        rows = cfg.worker.actor.global_batch_size
        self.loader = PromptLoader(self.train_items, rows, cfg.data.shuffle, cfg.data.seed)
        self.total_steps = cfg.trainer.max_steps or cfg.trainer.total_epochs * self.loader.steps_per_epoch
        self.checkpoints = CheckpointManager(checkpoint_dir(cfg.trainer), cfg.trainer.save_limit)
        self.step_count = 0
        self.workers = None
        self.tracker = None

    def start_workers(self) -> None:
        from longrl.controller.worker_group import ResourcePool, WorkerGroup, init_cluster
        from longrl.parallel.device import DEVICE_ENV
        from longrl.workers.sft_worker import SFTWorker

        cfg = self.cfg
        use_gpu = init_cluster(cfg.trainer.ray_address, cfg.trainer.device, world_size(cfg))
        pool = ResourcePool(cfg.trainer.nnodes, cfg.trainer.n_gpus_per_node, use_gpu)
        threads = max(1, (os.cpu_count() or 1) // cfg.trainer.n_gpus_per_node)
        env = {DEVICE_ENV: "cuda" if use_gpu else "cpu", "OMP_NUM_THREADS": str(threads),
               "TOKENIZERS_PARALLELISM": "false"}
        self.workers = WorkerGroup(SFTWorker, pool, cfg.worker.actor.ulysses_size, env, args=(cfg,),
                                   call_timeout_s=cfg.trainer.worker_timeout_s)
        self.workers.setup(self.total_steps)

    def fit(self) -> None:
        from longrl.logging import Tracker

        t = self.cfg.trainer
        self.start_workers()
        self.resume()
        self.tracker = Tracker(t.logger, checkpoint_dir(t), t.project_name, t.experiment_name, to_dict(self.cfg),
                               resume_step=self.step_count)
        if self.val_items and t.val_before_train and self.step_count == 0:
            self.tracker.log(self.validate(), step=0)
        with tqdm(total=self.total_steps, initial=self.step_count, desc="SFT steps", dynamic_ncols=True) as bar:
            while self.step_count < self.total_steps:
                self.step_count += 1
                metrics = step_metrics(self.workers.train_step(sft_batch(next(self.loader), self.pad_id)))
                last = self.step_count == self.total_steps
                if self.val_items and t.val_freq > 0 and (self.step_count % t.val_freq == 0 or last):
                    metrics.update(self.validate())
                if last or (t.save_freq > 0 and self.step_count % t.save_freq == 0):
                    self.save()
                self.tracker.log(metrics, step=self.step_count)
                bar.set_postfix(loss=f"{metrics.get('actor/sft_loss', float('nan')):.3f}")
                bar.update(1)
        logger.info("SFT done: %s; merge it with `python3 scripts/model_merger.py --local_dir %s`",
                    self.checkpoints.latest(), Path(str(self.checkpoints.latest())) / "actor")

    def validate(self) -> dict[str, float]:
        """val/sft_loss: the mean NLL per target token over the validation set."""
        rows = max(1, self.cfg.data.val_batch_size if self.cfg.data.val_batch_size > 0 else len(self.val_items))
        nll, tokens = 0.0, 0.0
        for start in range(0, len(self.val_items), rows):
            out = self.workers.val_loss(sft_batch(rows_to_batch(self.val_items[start:start + rows]), self.pad_id))
            nll, tokens = nll + float(out["nll_sum"].sum()), tokens + float(out["tokens"].sum())
        return {"val/sft_loss": nll / max(tokens, 1.0)}

    def save(self) -> None:
        staging = self.checkpoints.staging_dir(self.step_count)
        self.workers.save_checkpoint(str(staging))
        self.checkpoints.commit(self.step_count, {"step": self.step_count, "loader": self.loader.state_dict()})

    def resume(self) -> None:
        t = self.cfg.trainer
        path = self.checkpoints.resume_point(t.load_checkpoint_path, t.find_last_checkpoint)
        if path is None:
            return
        state = self.checkpoints.driver_state(path)
        self.workers.load_checkpoint(str(path))
        self.loader.load_state_dict(state["loader"])
        self.step_count = state["step"]
        logger.info("resumed from %s at step %d", path, self.step_count)

    def shutdown(self) -> None:
        if self.workers is not None:
            self.workers.shutdown()
        if self.tracker is not None:
            self.tracker.finish()


def step_metrics(per_worker: list[dict[str, float]]) -> dict[str, float]:
    """One step's metrics from every rank's: actor/* averaged, video/* counts summed over ranks."""
    from longrl.logging import reduce_metrics
    from longrl.models.vision_cache import reduce_video_stats

    videos = [{k: v for k, v in m.items() if k.startswith(("video/", "image/"))} for m in per_worker]
    metrics = reduce_metrics([{k: v for k, v in m.items() if not k.startswith(("video/", "image/"))} for m in per_worker])
    return {**metrics, **reduce_video_stats(videos)}


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from longrl.trainer.preflight import model_max_positions, with_local_models

    try:
        cfg = with_local_models(load_config(sys.argv[1:] if argv is None else argv))
        validate_sft(cfg, model_max_positions(cfg.worker.actor.model.model_path))
        print("effective config:\n" + json.dumps(to_dict(cfg), indent=2), flush=True)
        trainer = SFTTrainer(cfg)  # reads the data and renders every target: their errors come before any worker
    except (ConfigError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    try:
        trainer.fit()
    finally:
        trainer.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
