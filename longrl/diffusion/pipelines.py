"""One adapter per diffusers pipeline family (SD3 images, Wan videos), keyed by model_index.json's `_class_name`.

An adapter knows what differs between families: how prompts become conditioning tensors, the latent shape, the
transformer's call (with classifier-free guidance) and the decode to pixels. The sampler, the log-probs and the
update (`longrl.diffusion.actor`) are the same for every family. Size rules are read from the directory's JSON
files alone, so the driver checks a config before any worker (or diffusers) starts.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor

from longrl.config import RolloutConfig
from longrl.registry import Registry

Cond = dict[str, Tensor]
"""Per-sample conditioning tensors `[B, ...]` (prompt embeddings; `neg_*` for the unconditional branch)."""


def pipeline_class(model_path: str | Path) -> str | None:
    """model_index.json's `_class_name` of a diffusers pipeline directory, None for any other directory."""
    index = Path(model_path, "model_index.json")
    return json.loads(index.read_text())["_class_name"] if index.is_file() else None


def output_size(rollout: RolloutConfig) -> tuple[int, int]:
    """(height, width) in pixels: worker.rollout.resolution when set, else height and width."""
    return (rollout.resolution, rollout.resolution) if rollout.resolution else (rollout.height, rollout.width)


class DiffusionAdapter:
    """What one pipeline family does differently; subclasses fill it in."""

    video = False

    def load(self, path: str, device: torch.device):
        """The pipeline, fp32, on `device`, its text encoders and VAE frozen."""
        from diffusers import DiffusionPipeline

        pipe = DiffusionPipeline.from_pretrained(path, dtype=torch.float32).to(device)
        pipe.set_progress_bar_config(disable=True)
        for name, module in pipe.components.items():
            if isinstance(module, torch.nn.Module) and name != "transformer":
                module.requires_grad_(False).eval()
        return pipe

    def blocks(self, transformer: torch.nn.Module) -> list[torch.nn.Module]:
        """The transformer's blocks, one FSDP unit each."""
        raise NotImplementedError

    def encode(self, pipe, prompts: list[str], max_length: int, guided: bool) -> Cond:
        raise NotImplementedError

    def latent_shape(self, pipe, rollout: RolloutConfig) -> tuple[int, ...]:
        raise NotImplementedError

    def forward(self, transformer: torch.nn.Module, latents: Tensor, timesteps: Tensor, cond: Cond) -> Tensor:
        """The transformer's velocity for `latents` `[B, ...]` at `timesteps` `[B]` (sigma x 1000)."""
        raise NotImplementedError

    def decode(self, pipe, latents: Tensor) -> Tensor:
        """uint8 pixels: images `[B, 3, H, W]`, videos `[B, F, 3, H, W]`."""
        raise NotImplementedError

    def size_problems(self, model_path: str, rollout: RolloutConfig) -> list[str]:
        raise NotImplementedError

    def velocity(self, transformer: torch.nn.Module, latents: Tensor, timesteps: Tensor, cond: Cond,
                 guidance_scale: float) -> Tensor:
        """The guided velocity v_u + w (v_c - v_u); one forward on [negative, positive] rows. The unconditional
        branch is detached, as in flow_grpo's training: the gradient flows through the prompt's branch only."""
        if guidance_scale == 1.0:
            return self.forward(transformer, latents, timesteps, cond)
        both = self.forward(transformer, torch.cat([latents, latents]), torch.cat([timesteps, timesteps]),
                            {k: torch.cat([cond[f"neg_{k}"], cond[k]]) for k in cond if not k.startswith("neg_")})
        uncond, text = both.chunk(2)
        uncond = uncond.detach()
        return uncond + guidance_scale * (text - uncond)


def _json(model_path: str, part: str) -> dict:
    return json.loads(Path(model_path, part, "config.json").read_text())


def _divisible(rollout: RolloutConfig, multiple: int, why: str) -> list[str]:
    height, width = output_size(rollout)
    key = "worker.rollout.resolution" if rollout.resolution else "worker.rollout.height/width"
    if height % multiple or width % multiple or height <= 0 or width <= 0:
        return [f"{key}: {height}x{width} pixels must be positive multiples of {multiple} ({why}); e.g. "
                f"{max(multiple, height // multiple * multiple)}"]
    return []


def _pixels(decoded: Tensor) -> Tensor:
    """VAE output in [-1, 1] -> uint8 in [0, 255]."""
    return ((decoded.float() / 2 + 0.5).clamp(0, 1) * 255).round().to(torch.uint8)


class SD3Adapter(DiffusionAdapter):
    """Stable Diffusion 3 / 3.5: two CLIP and a T5 encoder, SD3Transformer2DModel, AutoencoderKL."""

    def blocks(self, transformer):
        return list(transformer.transformer_blocks)

    def encode(self, pipe, prompts, max_length, guided):
        pe, npe, pooled, npooled = pipe.encode_prompt(prompt=prompts, prompt_2=None, prompt_3=None,
                                                      device=pipe.transformer.device, do_classifier_free_guidance=guided,
                                                      negative_prompt=[""] * len(prompts) if guided else None,
                                                      max_sequence_length=max_length)
        cond = {"embeds": pe, "pooled": pooled}
        if guided:
            cond.update(neg_embeds=npe, neg_pooled=npooled)
        return cond

    def latent_shape(self, pipe, rollout):
        height, width = output_size(rollout)
        f = pipe.vae_scale_factor
        return (pipe.transformer.config.in_channels, height // f, width // f)

    def forward(self, transformer, latents, timesteps, cond):
        return transformer(hidden_states=latents, encoder_hidden_states=cond["embeds"], pooled_projections=cond["pooled"],
                           timestep=timesteps, return_dict=False)[0]

    def decode(self, pipe, latents):
        vae = pipe.vae
        return _pixels(vae.decode(latents / vae.config.scaling_factor + vae.config.shift_factor, return_dict=False)[0])

    def size_problems(self, model_path, rollout):
        factor = 2 ** (len(_json(model_path, "vae")["block_out_channels"]) - 1)
        patch = _json(model_path, "transformer")["patch_size"]
        return _divisible(rollout, factor * patch, f"the VAE factor {factor} times the transformer's patch {patch}")


class WanAdapter(DiffusionAdapter):
    """Wan 2.1 text-to-video: a UMT5 encoder, WanTransformer3DModel, AutoencoderKLWan (8x space, 4x time)."""

    video = True

    def blocks(self, transformer):
        return list(transformer.blocks)

    def encode(self, pipe, prompts, max_length, guided):
        pe, npe = pipe.encode_prompt(prompts, negative_prompt=[""] * len(prompts) if guided else None,
                                     do_classifier_free_guidance=guided, max_sequence_length=max_length,
                                     device=pipe.transformer.device)
        return {"embeds": pe, **({"neg_embeds": npe} if guided else {})}

    def latent_shape(self, pipe, rollout):
        height, width = output_size(rollout)
        f, ft = pipe.vae_scale_factor_spatial, pipe.vae_scale_factor_temporal
        return (pipe.transformer.config.in_channels, (rollout.num_frames - 1) // ft + 1, height // f, width // f)

    def forward(self, transformer, latents, timesteps, cond):
        return transformer(hidden_states=latents, timestep=timesteps, encoder_hidden_states=cond["embeds"],
                           return_dict=False)[0]

    def decode(self, pipe, latents):
        vae = pipe.vae
        shape = (1, vae.config.z_dim, 1, 1, 1)
        mean = torch.tensor(vae.config.latents_mean).view(shape).to(latents)
        std = torch.tensor(vae.config.latents_std).view(shape).to(latents)
        video = vae.decode(latents * std + mean, return_dict=False)[0]  # [B, 3, F, H, W]
        return _pixels(video.permute(0, 2, 1, 3, 4))

    def size_problems(self, model_path, rollout):
        vae = _json(model_path, "vae")
        spatial, temporal = vae.get("scale_factor_spatial", 8), vae.get("scale_factor_temporal", 4)
        patch = _json(model_path, "transformer")["patch_size"]
        problems = _divisible(rollout, spatial * patch[1], f"the VAE factor {spatial} times the patch {patch[1]}")
        if rollout.num_frames < 1 or rollout.num_frames % temporal != 1:
            k = max(0, rollout.num_frames // temporal)
            problems.append(f"worker.rollout.num_frames={rollout.num_frames} must be of the form {temporal}k+1 (the "
                            f"VAE compresses time {temporal}x); e.g. {temporal * k + 1}")
        return problems


PIPELINES: Registry[Callable[[], DiffusionAdapter]] = Registry("model_index.json _class_name")
PIPELINES.register("StableDiffusion3Pipeline")(SD3Adapter)
PIPELINES.register("WanPipeline")(WanAdapter)


def adapter_for(model_path: str) -> DiffusionAdapter:
    """The adapter of the pipeline directory `model_path`."""
    return PIPELINES[pipeline_class(model_path)]()
