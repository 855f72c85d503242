"""Turn a sharded actor checkpoint (global_step_N/actor) into a Hugging Face model directory.

Runs in one process with no process group: DCP reads every shard of every tensor named in the checkpoint's
metadata, the model is built on the meta device from actor/huggingface/config.json (no random init of a
big model) and the weights are assigned into it. A LoRA actor's checkpoint holds its adapters alone, beside
an `adapter_config.json` naming the base model: the merger writes the merged model and, in `<target>/adapter`,
the adapter alone in PEFT's format (`PeftModel.from_pretrained(base, <target>/adapter)` loads it).

CLI: `python3 scripts/model_merger.py --local_dir runs/x/global_step_N/actor [--target_dir DIR] [--hf_upload_path ID]`
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import warnings
from pathlib import Path

import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint import FileSystemReader
from torch.distributed.checkpoint.metadata import TensorStorageMetadata

from longrl.checkpoint.sharded import HF_DIR, MODEL_OPTIM_DIR
from longrl.config import LoraConfig

logger = logging.getLogger(__name__)

MODEL_PREFIX = "model."  # save_train_state stores {"model": ..., "optim": ...}; DCP flattens to "model.<fqn>"
WEIGHT_FILES = ("*.safetensors", "*.safetensors.index.json", "*.bin", "*.bin.index.json")


def load_model_weights(model_optim_dir: Path) -> dict[str, torch.Tensor]:
    """Full (unsharded) model tensors by FQN from a DCP directory, without a process group; optimizer skipped."""
    reader = FileSystemReader(str(model_optim_dir))
    metadata = reader.read_metadata()
    state = {key: torch.empty(meta.size, dtype=meta.properties.dtype)
             for key, meta in metadata.state_dict_metadata.items()
             if key.startswith(MODEL_PREFIX) and isinstance(meta, TensorStorageMetadata)}
    if not state:
        raise ValueError(f"{model_optim_dir} holds no '{MODEL_PREFIX}*' tensors: not a checkpoint written by "
                         f"longrl.checkpoint.sharded.save_train_state")
    with warnings.catch_warnings():  # loading in one process is the point here, not a mistake to warn about
        warnings.filterwarnings("ignore", message="torch.distributed is disabled")
        dcp.load(state, storage_reader=reader, no_dist=True)
    return {key[len(MODEL_PREFIX):]: tensor for key, tensor in state.items()}


def model_class(config) -> type:
    """The transformers class named in config.architectures (LM or VL); AutoModelForCausalLM when unnamed."""
    import transformers

    for name in config.architectures or []:
        cls = getattr(transformers, name, None)
        if cls is not None:
            return cls
    logger.warning("config.architectures=%s names no transformers class; using AutoModelForCausalLM",
                   config.architectures)
    return transformers.AutoModelForCausalLM


def build_model(hf_dir: Path, weights: dict[str, torch.Tensor]) -> torch.nn.Module:
    """Model from `hf_dir`/config.json with `weights` loaded strictly (only tied parameters may be absent)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    from longrl.models.adapter import ADAPTERS

    config = AutoConfig.from_pretrained(str(hf_dir))
    cls = model_class(config)
    # the trained module may sit inside the checkpoint's model (Qwen2.5-Omni's thinker under `thinker.`)
    prefix = ADAPTERS[config.model_type]().checkpoint_prefix if config.model_type in ADAPTERS else ""
    weights = {prefix + name: tensor for name, tensor in weights.items()}
    with torch.device("meta"):
        model = cls.from_config(config) if cls is AutoModelForCausalLM else cls(config)
    result = model.load_state_dict(weights, strict=False, assign=True)
    model.tie_weights()  # a tied lm_head is not in the checkpoint; it now shares embed_tokens' tensor
    still_meta = [name for name, p in model.named_parameters() if p.is_meta]
    if result.unexpected_keys or still_meta:
        raise ValueError(f"checkpoint does not match {hf_dir}/config.json ({cls.__name__}): unexpected keys "
                         f"{result.unexpected_keys[:10]}, missing {still_meta[:10]}; merge with the config "
                         f"saved beside the checkpoint")
    return model


def _adapter_model(hf_dir: Path, weights: dict[str, torch.Tensor]) -> torch.nn.Module | None:
    """The model a family's adapter builds for itself (VILA: a layout transformers cannot read), or None."""
    from longrl.models.adapter import ADAPTERS

    model_type = json.loads((hf_dir / "config.json").read_text()).get("model_type")
    return ADAPTERS[model_type]().merged_model(hf_dir, weights) if model_type in ADAPTERS else None


def _copy_metadata(hf_dir: Path, target: Path) -> None:
    """Tokenizer/processor/generation files: copied, not re-created, so no processor class has to import."""
    weights = {p for pattern in WEIGHT_FILES for p in hf_dir.glob(pattern)}
    for path in hf_dir.iterdir():
        if path.is_file() and path.name != "config.json" and path not in weights:
            shutil.copy2(path, target / path.name)


DIFFUSION_BASE = "diffusion_base.json"
"""Beside a diffusion actor's shards: the pipeline directory it started from (its frozen parts are not copied)."""


LORA_CONFIG_DIR = "lora"
"""Beside a LoRA diffusion actor's shards (which hold the adapters alone): the peft adapter config."""
LORA_ADAPTER_DIR = "lora_adapter"
"""In a merged pipeline directory of a LoRA run: the adapter alone, for `pipe.load_lora_weights` on the base."""


def save_diffusion_base(actor_dir: Path, model_path: str, lora=None) -> None:
    """Record the pipeline directory a diffusion actor started from and, with LoRA, its peft LoraConfig `lora`
    (rank 0, at every save)."""
    (actor_dir / DIFFUSION_BASE).write_text(json.dumps({"model_path": str(Path(model_path).resolve())}))
    if lora is not None:
        lora.save_pretrained(str(actor_dir / LORA_CONFIG_DIR))


def merge_pipeline(local_dir: Path, target: Path) -> Path:
    """A diffusers pipeline directory: the base pipeline with the trained transformer's weights; after LoRA, the
    adapters merged into it, and the adapter alone in `LORA_ADAPTER_DIR` inside it."""
    from diffusers import DiffusionPipeline

    base = json.loads((local_dir / DIFFUSION_BASE).read_text())["model_path"]
    pipe = DiffusionPipeline.from_pretrained(base, dtype=torch.float32)
    lora = local_dir / LORA_CONFIG_DIR
    if lora.is_dir():
        from peft import LoraConfig
        from peft.utils import get_peft_model_state_dict

        pipe.transformer.add_adapter(LoraConfig.from_pretrained(str(lora)))
    result = pipe.transformer.load_state_dict(load_model_weights(local_dir / MODEL_OPTIM_DIR), strict=False)
    # with LoRA the checkpoint holds every adapter weight and nothing of the base
    missing = [k for k in result.missing_keys if not lora.is_dir() or "lora_" in k]
    if missing or result.unexpected_keys:
        raise ValueError(f"{local_dir} does not match the transformer of {base}: missing {missing[:10]}, "
                         f"unexpected {result.unexpected_keys[:10]}")
    if lora.is_dir():
        type(pipe).save_lora_weights(str(target / LORA_ADAPTER_DIR),
                                     transformer_lora_layers=get_peft_model_state_dict(pipe.transformer),
                                     transformer_lora_adapter_metadata=pipe.transformer.peft_config["default"].to_dict())
        pipe.transformer.fuse_lora()
        pipe.transformer.unload_lora()
    pipe.save_pretrained(str(target))
    logger.info("merged %s into the pipeline directory %s", local_dir, target)
    return target


LORA_CONFIG = "adapter_config.json"
"""Beside a LoRA actor's shards: peft's adapter config, whose base_model_name_or_path is the starting model."""
ADAPTER_DIR = "adapter"


def save_lora_config(actor_dir: Path, lora: LoraConfig, model_path: str) -> None:
    """Record a LoRA actor's adapter config and the model directory it started from (rank 0, at every save)."""
    from longrl.models.lora import lora_config

    peft_cfg = lora_config(lora)
    peft_cfg.base_model_name_or_path = str(Path(model_path).resolve())
    peft_cfg.save_pretrained(str(actor_dir))


def merge_lora(local_dir: Path, hf_dir: Path, target: Path) -> Path:
    """The base model with the checkpoint's adapters merged in, saved to `target`, and the adapter alone (PEFT
    format) to `target`/adapter."""
    from peft import LoraConfig as PeftLoraConfig
    from peft import get_peft_model
    from transformers import AutoConfig

    from longrl.models.adapter import ADAPTERS

    peft_cfg = PeftLoraConfig.from_pretrained(str(local_dir))
    base = peft_cfg.base_model_name_or_path
    if not (Path(base) / "config.json").is_file():
        raise FileNotFoundError(f"{local_dir / LORA_CONFIG} names the base model {base!r}, which is not a model "
                                f"directory any more: the checkpoint holds the LoRA adapters only; restore the base "
                                f"model there, or edit base_model_name_or_path in that file")
    config = AutoConfig.from_pretrained(str(hf_dir))
    model = model_class(config).from_pretrained(base, dtype=torch.float32)
    # the trained module may sit inside the checkpoint's model (Qwen2.5-Omni's thinker under `thinker.`)
    prefix = ADAPTERS[config.model_type]().checkpoint_prefix if config.model_type in ADAPTERS else ""
    peft_model = get_peft_model(model.get_submodule(prefix.rstrip(".")) if prefix else model, peft_cfg)
    weights = {"base_model.model." + name: tensor for name, tensor in load_model_weights(local_dir / MODEL_OPTIM_DIR).items()}
    result = peft_model.load_state_dict(weights, strict=False)
    adapter_keys = {name for name in peft_model.state_dict() if ".lora_" in name}
    if result.unexpected_keys or adapter_keys - set(weights):
        raise ValueError(f"{local_dir} does not match the adapters of {local_dir / LORA_CONFIG} on {base}: unexpected "
                         f"{result.unexpected_keys[:10]}, missing {sorted(adapter_keys - set(weights))[:10]}")
    target.mkdir(parents=True, exist_ok=True)
    peft_model.save_pretrained(str(target / ADAPTER_DIR))
    peft_model.merge_and_unload()  # in place: the adapted layers become plain linear layers again
    model.save_pretrained(str(target))
    logger.info("merged the LoRA adapters of %s into %s (adapter alone: %s)", local_dir, target, target / ADAPTER_DIR)
    return target


def merge(local_dir: str | Path, target_dir: str | Path | None = None) -> Path:
    """Write a from_pretrained-loadable model + tokenizer for `local_dir` (global_step_N/actor), for a LoRA actor
    also its adapter alone (`<target>/adapter`), or for a diffusion actor a DiffusionPipeline directory; returns
    the dir."""
    local_dir = Path(local_dir)
    hf_dir = local_dir / HF_DIR
    if (local_dir / DIFFUSION_BASE).is_file():
        return merge_pipeline(local_dir, Path(target_dir) if target_dir is not None else hf_dir)
    if not (hf_dir / "config.json").is_file():
        raise FileNotFoundError(f"{hf_dir / 'config.json'} is missing: --local_dir must be a global_step_N/actor "
                                f"directory saved with save_hf_metadata")
    target = Path(target_dir) if target_dir is not None else hf_dir
    if (local_dir / LORA_CONFIG).is_file():
        merge_lora(local_dir, hf_dir, target)
    else:
        weights = load_model_weights(local_dir / MODEL_OPTIM_DIR)
        model = _adapter_model(hf_dir, weights) or build_model(hf_dir, weights)
        target.mkdir(parents=True, exist_ok=True)
        model.save_pretrained(str(target))
    if target.resolve() != hf_dir.resolve():
        _copy_metadata(hf_dir, target)
    logger.info("merged %s into %s", local_dir, target)
    return target


def upload(folder: Path, repo_id: str) -> None:
    """Push a merged model directory to the Hugging Face hub repository `repo_id` (created if missing)."""
    from huggingface_hub import HfApi

    api = HfApi()
    try:
        api.create_repo(repo_id=repo_id, exist_ok=True)
        api.upload_folder(folder_path=str(folder), repo_id=repo_id)
    except (OSError, ValueError) as e:  # requests' and the hub's errors derive from these; offline mode too
        raise RuntimeError(f"--hf_upload_path={repo_id!r}: uploading {folder} failed ({type(e).__name__}: "
                           f"{str(e).splitlines()[0] if str(e) else 'no detail'}); the merged model is on disk "
                           f"there; check the network and `huggingface-cli login`, then upload it again") from None
    logger.info("uploaded %s to the hub repository %s", folder, repo_id)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Merge a sharded longrl checkpoint into a Hugging Face model.")
    parser.add_argument("--local_dir", required=True, help="a global_step_N/actor directory")
    parser.add_argument("--target_dir", default=None, help="output directory (default: <local_dir>/huggingface)")
    parser.add_argument("--hf_upload_path", default=None, help="also push the merged model to this hub repo id")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    target = merge(args.local_dir, args.target_dir)
    print(f"saved Hugging Face model to {target}")
    if args.hf_upload_path:
        try:
            upload(target, args.hf_upload_path)
        except RuntimeError as e:
            parser.exit(2, f"error: {e}\n")
        print(f"uploaded to {args.hf_upload_path}")


if __name__ == "__main__":
    main()
