"""VILA / NVILA / LongVILA, natively: SigLIP tower + downsampling MLP projector + Qwen2 language model.

Neither transformers nor vLLM knows these models, and their remote code needs CUDA and packages we do not
have, so the model is rebuilt here from transformers parts, reading and writing the checkpoint layout VILA's
own code reads (../shared/reference/missing-models-facts.md, part A):

  <root>/config.json        model_type "vila" (remote-code form, with auto_map) or "llava_llama" (dev form);
                            nested llm_cfg / vision_tower_cfg / mm_projector_cfg dicts
  <root>/llm/               a plain Qwen2ForCausalLM checkpoint + the tokenizer (<image>, <vila/video> added)
  <root>/vision_tower/      SiglipVisionModel + preprocessor_config.json
  <root>/mm_projector/      config.json {mm_projector_type, model_type: v2l_projector} + model.safetensors
                            whose keys are layers.<i>.weight|bias (the upstream nn.Sequential indices)

An image (or one video frame) is resized to the tower's square input, run through SigLIP, and its
second-to-last hidden state (mm_vision_select_layer=-2, all tokens: "cls_patch") is downsampled by the
projector: the g x g patch grid is zero-padded to a multiple of k, k x k neighbours are concatenated along
channels (space-to-depth), and an MLP maps them to the language model's width. A video is its frames, each
followed by the embedding of "\\n" (the language model's own, so a trained embedding table reaches it).
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import torch
from torch import nn

VILA_MODEL_TYPES = ("vila", "llava_llama")
"""Top-level model_type of the remote-code form and of the dev form."""
SUBFOLDERS = ("llm", "vision_tower", "mm_projector")
PROJECTOR_BLOCKS = {"mlp_downsample": 2, "mlp_downsample_2x2_fix": 2, "mlp_downsample_3x3_fix": 3}
"""mm_projector_type -> k of its k x k space-to-depth (mlp_downsample and _2x2_fix are the same module)."""
IMAGE_TOKEN, VIDEO_TOKEN = "<image>", "<vila/video>"
ADDED_TOKENS = ("[BOS]", "[PAD]", "<vila/sentinel>", IMAGE_TOKEN, VIDEO_TOKEN)
"""Special tokens VILA adds to the Qwen2 vocabulary, in order (llava/constants.py)."""


class VILAError(ValueError):
    """A directory that is not a loadable VILA checkpoint: names the path and what is wrong."""


def space_to_depth(x: torch.Tensor, k: int) -> torch.Tensor:
    """[N, g*g, C] patch rows of a g x g grid -> [N, ceil(g/k)^2, k*k*C].

    The grid is zero-padded at the bottom and right to a multiple of k; each output token is its k x k block,
    rows of the block first (channel index (a*k + b)*C + c for block row a, column b), tokens row-major:
    VILA's flat_square_2x2 / flat_square_3x3."""
    n, p, c = x.shape
    g = math.isqrt(p)
    if g * g != p:
        raise ValueError(f"the projector takes a square patch grid; got {p} patches")
    grid = x.reshape(n, g, g, c)
    pad = -g % k
    if pad:
        grid = nn.functional.pad(grid, (0, 0, 0, pad, 0, pad))
    m = (g + pad) // k
    blocks = grid.reshape(n, m, k, m, k, c).permute(0, 1, 3, 2, 4, 5)  # [N, row block, col block, a, b, C]
    return blocks.reshape(n, m * m, k * k * c)


class DownSample(nn.Module):
    """The parameter-free first layer of the downsampling projectors (layers.0 upstream)."""

    def __init__(self, k: int):
        super().__init__()
        self.k = k

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return space_to_depth(x, self.k)


class MultimodalProjector(nn.Module):
    """VILA's mm_projector: `layers` holds exactly the upstream nn.Sequential, so that the keys
    `layers.<i>.weight|bias` of mm_projector/model.safetensors load unchanged.

    mlp_downsample(_2x2_fix): [DownSample(2), LN(4Dv), Linear(4Dv, D), GELU, Linear(D, D)]
    mlp_downsample_3x3_fix:   [DownSample(3), LN(9Dv), Linear(9Dv, 3Dv), GELU, LN(3Dv), Linear(3Dv, D), GELU,
                               Linear(D, D)]
    """

    def __init__(self, projector_type: str, vision_hidden: int, hidden: int):
        super().__init__()
        if projector_type not in PROJECTOR_BLOCKS:
            raise VILAError(f"mm_projector_type {projector_type!r} is not supported; choose from "
                            f"{sorted(PROJECTOR_BLOCKS)}")
        self.projector_type = projector_type
        k = self.k = PROJECTOR_BLOCKS[projector_type]
        wide = k * k * vision_hidden
        if k == 2:
            layers = [DownSample(2), nn.LayerNorm(wide), nn.Linear(wide, hidden), nn.GELU(), nn.Linear(hidden, hidden)]
        else:
            mid = 3 * vision_hidden
            layers = [DownSample(3), nn.LayerNorm(wide), nn.Linear(wide, mid), nn.GELU(), nn.LayerNorm(mid),
                      nn.Linear(mid, hidden), nn.GELU(), nn.Linear(hidden, hidden)]
        self.layers = nn.Sequential(*layers)

    def tokens(self, grid: int) -> int:
        """Language-model tokens per image of a grid x grid patch grid: ceil(grid/k)^2."""
        return (-(-grid // self.k)) ** 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[N, g*g, Dv] -> [N, ceil(g/k)^2, D]."""
        return self.layers(x)


def read_config(root: str | Path) -> dict:
    """The top-level config.json of a VILA checkpoint, checked: a VILA model_type and the three subfolders."""
    root = Path(root)
    file = root / "config.json"
    if not file.is_file():
        raise VILAError(f"{root}: no config.json; a VILA checkpoint has config.json, llm/, vision_tower/, mm_projector/")
    config = json.loads(file.read_text())
    if config.get("model_type") not in VILA_MODEL_TYPES:
        raise VILAError(f"{file}: model_type {config.get('model_type')!r} is not a VILA model {VILA_MODEL_TYPES}")
    for name in SUBFOLDERS:
        if not (root / name / "config.json").is_file():
            raise VILAError(f"{root}: missing {name}/ ({name}/config.json): a VILA checkpoint keeps its language "
                            f"model, vision tower and projector in llm/, vision_tower/ and mm_projector/")
    return config


class VILAForCausalLM(nn.Module):
    """The native VILA model: `llm` (Qwen2ForCausalLM), `vision_tower` (SiglipVisionModel), `mm_projector`.

    `forward` runs the language model on token ids whose media placeholders take the media's embeddings;
    `encode_images` is the tower + projector. `config` is the language model's config (what FSDP and the trainer read);
    `vila_config` the top-level config.json as loaded, written back unchanged by `save_pretrained`.
    """

    def __init__(self, llm: nn.Module, vision_tower: nn.Module, mm_projector: MultimodalProjector, vila_config: dict,
                 media_token_ids: tuple[int, int], source: Path | None = None):
        super().__init__()
        self.llm, self.vision_tower, self.mm_projector = llm, vision_tower, mm_projector
        self.vila_config, self.source = vila_config, source
        # the trainer reads (and Ulysses switches the attention of) the language model's own config
        self.config = llm.config
        self.image_token_id, self.video_token_id = media_token_ids
        self.select_layer = int(vila_config.get("mm_vision_select_layer", -2))
        feature = vila_config.get("mm_vision_select_feature", "cls_patch")
        if feature != "cls_patch":  # "patch" drops token 0, a CLS token SigLIP does not have
            raise VILAError(f"mm_vision_select_feature {feature!r}: only 'cls_patch' (SigLIP towers) is supported")

    @classmethod
    def from_pretrained(cls, root: str | Path, dtype: torch.dtype = torch.float32,
                        attn_implementation: str = "sdpa") -> VILAForCausalLM:
        """Load a checkpoint of either config form; VILAError naming the path for a malformed directory."""
        from safetensors.torch import load_file
        from transformers import Qwen2ForCausalLM, SiglipVisionModel

        root = Path(root)
        config = read_config(root)
        _check_projector_weights(root)
        llm = Qwen2ForCausalLM.from_pretrained(str(root / "llm"), dtype=dtype, attn_implementation=attn_implementation)
        tower = SiglipVisionModel.from_pretrained(str(root / "vision_tower"), dtype=dtype,
                                                  attn_implementation=attn_implementation)
        projector = projector_for(root, tower.config.hidden_size, llm.config.hidden_size)
        weights = root / "mm_projector" / "model.safetensors"
        missing, unexpected = projector.load_state_dict(load_file(str(weights)), strict=False)
        if missing or unexpected:
            raise VILAError(f"{weights}: keys do not match mm_projector_type {projector.projector_type!r}: "
                            f"missing {missing}, unexpected {unexpected}")
        return cls(llm, tower, projector.to(dtype), config, media_token_ids(root), root)

    @classmethod
    def from_config(cls, root: str | Path) -> VILAForCausalLM:
        """The architecture of the checkpoint layout at `root` (its subfolders' config.json files) on the meta
        device, without weights (the merger assigns the trained ones)."""
        from transformers import Qwen2Config, Qwen2ForCausalLM, SiglipVisionConfig, SiglipVisionModel

        root = Path(root)
        config = read_config(root)
        with torch.device("meta"):
            llm = Qwen2ForCausalLM(Qwen2Config.from_pretrained(str(root / "llm")))
            tower = SiglipVisionModel(SiglipVisionConfig.from_pretrained(str(root / "vision_tower")))
            projector = projector_for(root, tower.config.hidden_size, llm.config.hidden_size)
        return cls(llm, tower, projector, config, media_token_ids(root), root)

    def save_pretrained(self, out: str | Path) -> None:
        """Write the same layout: config.json as loaded, llm/ (+ tokenizer), vision_tower/, mm_projector/.

        Files of the source directory that are not weights (tokenizer, preprocessor config, the remote code the
        auto_map names) are copied, so VILA's own code loads the result like the original."""
        from safetensors.torch import save_file

        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        if self.source is not None:
            copy_non_weights(self.source, out)
        (out / "config.json").write_text(json.dumps(self.vila_config, indent=2))
        self.llm.save_pretrained(str(out / "llm"))
        self.vision_tower.save_pretrained(str(out / "vision_tower"))
        projector_dir = out / "mm_projector"
        projector_dir.mkdir(exist_ok=True)
        (projector_dir / "config.json").write_text(json.dumps(projector_config(self.mm_projector.projector_type)))
        save_file({k: v.detach().contiguous().cpu() for k, v in self.mm_projector.state_dict().items()},
                  str(projector_dir / "model.safetensors"), metadata={"format": "pt"})

    def get_input_embeddings(self) -> nn.Module:
        return self.llm.get_input_embeddings()

    def get_output_embeddings(self) -> nn.Module:
        return self.llm.get_output_embeddings()

    def get_decoder(self) -> nn.Module:
        """The decoder stack: sequence parallelism cuts inputs_embeds to each rank's slice as they enter it."""
        return self.llm.model

    def gradient_checkpointing_enable(self, **kwargs: object) -> None:
        self.llm.gradient_checkpointing_enable(**kwargs)

    def encode_images(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """[N, 3, S, S] normalised images -> [N, tokens, D]: SigLIP's hidden state mm_vision_select_layer
        (-2: the output of the second-to-last layer, no post-layernorm), then the projector."""
        dtype = next(self.vision_tower.parameters()).dtype
        out = self.vision_tower(pixel_values.to(dtype), output_hidden_states=True)
        return self.mm_projector(out.hidden_states[self.select_layer])

    def forward(self, input_ids: torch.Tensor, media_embeds: torch.Tensor | None = None,
                media_pixels: list[torch.Tensor] | None = None, placeholder_ids: torch.Tensor | None = None,
                **kwargs: object) -> object:
        """The language model on `input_ids` [B, L] whose image/video placeholder positions take the media's
        embeddings in order: `media_embeds` [M, D] (cached), or `media_pixels` (per item [T, 3, S, S], encoded
        here so a trainable tower gets gradients). Every other position, the per-frame newlines included, is
        embedded with the live table. `placeholder_ids` (same shape, responses padded: adapter.response_media_as_text)
        says where the placeholders are when a response holds their ids as text. `kwargs`: the language model's
        (position_ids, attention_mask, ...)."""
        embeds = self.get_input_embeddings()(input_ids)
        if media_pixels is not None:
            media_embeds = torch.cat([self.encode_images(p).flatten(0, 1) for p in media_pixels])
        where = input_ids if placeholder_ids is None else placeholder_ids
        slots = (where == self.image_token_id) | (where == self.video_token_id)
        count = int(slots.sum())
        if count != (0 if media_embeds is None else media_embeds.shape[0]):
            raise ValueError(f"{count} media placeholder positions but "
                             f"{0 if media_embeds is None else media_embeds.shape[0]} media embeddings")
        if count:
            embeds = embeds.masked_scatter(slots[..., None], media_embeds.to(embeds.dtype))
        return self.llm(inputs_embeds=embeds, **kwargs)


def media_token_ids(root: str | Path) -> tuple[int, int]:
    """The ids of <image> and <vila/video> in the tokenizer of llm/ (VILAError when it lacks them)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(Path(root) / "llm"))
    ids = tuple(tokenizer.convert_tokens_to_ids(t) for t in (IMAGE_TOKEN, VIDEO_TOKEN))
    if tokenizer.unk_token_id in ids or None in ids:
        raise VILAError(f"{root}/llm: the tokenizer has no {IMAGE_TOKEN} or {VIDEO_TOKEN} token")
    return ids


def projector_config(projector_type: str) -> dict:
    """mm_projector/config.json as VILA writes it."""
    return {"architectures": ["MultimodalProjector"], "model_type": "v2l_projector",
            "mm_projector_type": projector_type}


def projector_for(root: Path, vision_hidden: int, hidden: int) -> MultimodalProjector:
    """The projector module mm_projector/config.json describes (initialised randomly)."""
    cfg = json.loads((root / "mm_projector" / "config.json").read_text())
    if "mm_projector_type" not in cfg:
        raise VILAError(f"{root / 'mm_projector' / 'config.json'}: no mm_projector_type")
    return MultimodalProjector(cfg["mm_projector_type"], vision_hidden, hidden)


def tokens_per_frame(root: str | Path) -> int:
    """Language-model tokens one image or video frame takes, with its newline: ceil(g/k)^2 + 1 for a g x g patch
    grid (the tower's image_size / patch_size) and the projector's k (122 for NVILA-Lite, 257 for LongVILA-R1)."""
    root = Path(root)
    tower = json.loads((root / "vision_tower" / "config.json").read_text())
    projector = json.loads((root / "mm_projector" / "config.json").read_text())
    k = PROJECTOR_BLOCKS.get(projector.get("mm_projector_type"))
    if k is None:
        raise VILAError(f"{root}/mm_projector/config.json: mm_projector_type {projector.get('mm_projector_type')!r} "
                        f"is not supported; choose from {sorted(PROJECTOR_BLOCKS)}")
    grid = tower["image_size"] // tower["patch_size"]
    return (-(-grid // k)) ** 2 + 1


def _check_projector_weights(root: Path) -> None:
    if not (root / "mm_projector" / "model.safetensors").is_file():
        raise VILAError(f"{root}: missing mm_projector/model.safetensors")


def copy_non_weights(source: Path, out: Path) -> None:
    """Every file under `source` but weights (configs, tokenizer, processor, remote code) to the same place
    under `out`."""
    if source.resolve() == out.resolve():
        return
    for file in source.rglob("*"):
        rel = file.relative_to(source)
        if file.is_file() and file.suffix not in (".safetensors", ".bin", ".pt") and not rel.name.startswith("model."):
            (out / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(file, out / rel)
