"""Ulysses SP and padding-free through the actor, reference and critic passes, on 2 gloo ranks with FSDP2.

One 2-process world (spawned once for the module) loads the tiny Qwen2, the tiny Qwen2.5-VL with a frozen
tower (cached video embeddings, as with worker.rollout.cache_video_embeds) and with a trainable tower (pixels),
each sharded by the worker's own `load_sharded`. For every model it runs the Actor with ulysses_size=1
(dp=2: the dispatcher gives each rank half the rows) and ulysses_size=2 (dp=1: both ranks get every row),
padded and padding-free, and records the log-probs (`Actor.log_probs`, the old-log-prob and reference pass)
and the gradient `Actor.update` reaches the optimizer with. The reference is the plain Hugging Face forward
(its own sdpa with the padding mask). Log-probs must agree to 1e-5 (fp32) and gradients to 1e-4 relative.
"""

from __future__ import annotations

import dataclasses
import datetime
import os
import socket
from pathlib import Path

import numpy as np
import pytest
import torch

from longrl.protocol import Batch

WORLD = 2
TEMPERATURE = 0.8
ADVANTAGES = [1.0, -0.5, 0.75, -1.25]  # one per row
MODES = [(1, False), (1, True), (2, False), (2, True)]  # (ulysses_size, padding_free)
MODELS = ["text", "video_embeds", "video_pixels"]
RESPONSE_LENGTHS = {"text": [7, 3, 7, 5], "video": [6, 4, 6, 2]}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _text_rows() -> Batch:
    """4 rows: prompts of 5, 9, 6, 12 random tokens; responses of 7, 3, 7, 5 tokens (width 7)."""
    g = torch.Generator().manual_seed(0)
    prompts = [torch.randint(3, 500, (n,), generator=g).tolist() for n in (5, 9, 6, 12)]
    return _with_responses(prompts, g, RESPONSE_LENGTHS["text"])


def _response_mask(lengths: list[int]) -> torch.Tensor:
    return (torch.arange(max(lengths)) < torch.tensor(lengths)[:, None]).long()


def _with_responses(prompts: list[list[int]], g: torch.Generator, lengths: list[int]) -> Batch:
    mask = _response_mask(lengths)
    responses = torch.randint(3, 500, mask.shape, generator=g)
    return Batch({"responses": responses * mask, "response_mask": mask}, {"prompt_ids": prompts})


def _video_rows(prompt: list[int], text_prompt: list[int], videos: list[str]) -> Batch:
    """Rows 0 and 1 ask about a video each; rows 2 and 3 lost theirs (text only, like a skipped video)."""
    g = torch.Generator().manual_seed(1)
    batch = _with_responses([prompt, prompt, text_prompt, text_prompt + [7, 8, 9]], g, RESPONSE_LENGTHS["video"])
    batch["videos"] = [[videos[0]], [videos[1]], [], []]
    return batch


def _training_columns(batch: Batch, log_probs: torch.Tensor) -> Batch:
    """old/ref log-probs near the policy's (ratios off 1, inside and outside the clip) and fixed advantages."""
    mask = batch["response_mask"]
    wiggle = 0.3 * torch.sin(torch.arange(mask.numel(), dtype=torch.float32)).reshape(mask.shape)
    batch = batch.index(range(len(batch)))
    batch["old_log_probs"] = (log_probs + wiggle) * mask
    batch["ref_log_probs"] = (log_probs - 0.5 * wiggle) * mask
    batch["advantages"] = torch.tensor(ADVANTAGES)[:, None] * mask
    return batch


def _plain_log_probs(model, adapter, batch: Batch, pad_id: int) -> torch.Tensor:
    """The Hugging Face forward with its own padding mask (no Ulysses hook): the reference."""
    from longrl.workers.actor import response_logits, token_log_probs

    with torch.no_grad():
        model.eval()
        return token_log_probs(response_logits(model, adapter, batch, pad_id, TEMPERATURE),
                               batch["responses"]) * batch["response_mask"]


def _update_gradients(actor, batch: Batch) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
    """The full gradient the optimizer would step with (the step itself is skipped), and the update's stats."""
    from torch.distributed.tensor import DTensor

    grads: dict[str, torch.Tensor] = {}

    def capture() -> None:  # a collective: every rank gathers every parameter's gradient in the same order
        for name, p in actor.model.named_parameters():
            if p.grad is not None:
                g = p.grad.full_tensor() if isinstance(p.grad, DTensor) else p.grad
                grads[name] = g.detach().clone()

    actor.optimizer.step = capture
    stats = actor.update(batch, TEMPERATURE)
    return grads, stats


def _run_model(name: str, cfg, batch: Batch, rank: int, groups: dict) -> dict[str, object]:
    """Plain log-probs, then per (sp, padding_free): Actor.log_probs, reference-pass log-probs, gradients."""
    from longrl.controller.dispatch import split_for_ranks
    from longrl.models.adapter import adapter_for
    from longrl.workers.actor import Actor, response_log_probs
    from longrl.workers.fsdp_worker import load_sharded

    adapter = adapter_for("qwen2" if name == "text" else "qwen2_5_vl")
    model = load_sharded(adapter, cfg.worker.actor.model.model_path, torch.float32, cfg, trainable=True)
    reference = load_sharded(adapter, cfg.worker.actor.model.model_path, torch.float32, cfg, trainable=False)
    if name != "text":
        batch = _with_video_inputs(batch, cfg, model, adapter, "pixels" if name == "video_pixels" else "embeds")
    out: dict[str, object] = {"plain": _plain_log_probs(model, adapter, batch, 0)}
    train = _training_columns(batch, out["plain"])
    for sp_size, padding_free in MODES:
        actor_cfg = dataclasses.replace(cfg.worker.actor, padding_free=padding_free)
        actor = Actor(model, adapter, actor_cfg, cfg.algorithm, 0, WORLD // sp_size, 10, groups[sp_size],
                      responses_per_prompt=1)  # mini-batches of global_batch_size rows: the rows given
        log_probs = actor.log_probs(batch, TEMPERATURE)  # every rank, every row
        ref = response_log_probs(reference, adapter, batch, 0, TEMPERATURE, 2, groups[sp_size], padding_free)
        parts, _ = split_for_ranks(train, WORLD // sp_size, sp_size)
        grads, stats = _update_gradients(actor, parts[rank])
        out[(sp_size, padding_free)] = {"log_probs": log_probs, "ref_log_probs": ref, "grads": grads, "stats": stats}
    return out


def _with_video_inputs(batch: Batch, cfg, model, adapter, mode: str) -> Batch:
    from longrl.models.qwen2_5_vl import MEDIA_INPUTS
    from longrl.models.vision_cache import VideoSettings, VisionCache, max_over_ranks

    settings = VideoSettings.for_model(cfg.worker.actor.model.model_path, model.config.vision_config, 8,
                                       cfg.data.min_pixels, cfg.data.max_pixels)
    rows = VisionCache(settings).row_inputs(batch["videos"], mode, "actor",
                                            lambda v: adapter.encode(model, v), max_over_ranks)
    return batch.union(Batch(objects={MEDIA_INPUTS: rows}))


def _split_encodings(cfg, videos: list[str], groups: dict) -> dict[int, list[torch.Tensor]]:
    """Tower embeddings of the two mp4s (4 temporal steps: 2 a rank) and of random-pixel videos of 3 steps
    (1 and 2 a rank) and of 1 step (rank 1 encodes a stand-in and keeps nothing), per SP size."""
    from longrl.models.qwen2_5_vl import Qwen2_5_VLAdapter
    from longrl.models.vision_cache import MediaInput, VideoSettings, VisionCache
    from longrl.workers.fsdp_worker import load_sharded

    adapter = Qwen2_5_VLAdapter()
    model = load_sharded(adapter, cfg.worker.actor.model.model_path, torch.float32, cfg, trainable=False)
    vision = model.config.vision_config
    settings = VideoSettings.for_model(cfg.worker.actor.model.model_path, vision, 8, cfg.data.min_pixels,
                                       cfg.data.max_pixels)
    inputs = [row[0] for row in VisionCache(settings).row_inputs([[v] for v in videos], "pixels")]
    g = torch.Generator().manual_seed(2)
    patch = 3 * vision.temporal_patch_size * vision.patch_size ** 2
    for steps in (3, 1):  # 4x4 patches a step -> 4 tokens a step
        inputs.append(MediaInput(f"random-{steps}", (steps, 4, 4), 1.0, 4 * steps,
                                 torch.randn(16 * steps, patch, generator=g)))
    return {size: [adapter.encode(model, v, groups[size]) for v in inputs] for size in (1, 2)}


def _critic_values(cfg, batch: Batch, groups: dict) -> dict[object, torch.Tensor]:
    """Values of one value model (eval: no dropout) through Critic.values for every mode."""
    from longrl.models.adapter import TextAdapter
    from longrl.workers.critic import Critic, load_value_model
    from longrl.workers.fsdp_worker import shard

    torch.manual_seed(0)  # the fresh value head is the same on both ranks
    model = shard(load_value_model(cfg.worker.actor.model.model_path, torch.float32), TextAdapter(), cfg,
                  trainable=True)
    return {(sp_size, pf): Critic(model, TextAdapter(), cfg.worker.critic, "token", 0, WORLD // sp_size, 10,
                                  groups[sp_size], pf, responses_per_prompt=1).values(batch) for sp_size, pf in MODES}


def _worker(rank: int, port: int, text_dir: str, vl_dir: str, videos: list[str], prompts: dict,
            out_dir: str) -> None:
    import torch.distributed as dist

    from longrl.config import load_config
    from longrl.parallel.ulysses import init_sp_groups

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=WORLD, timeout=datetime.timedelta(seconds=120))
    try:
        groups = {1: init_sp_groups(1), 2: init_sp_groups(2)}
        # huge max_grad_norm: compare raw gradients; entropy bonus on, so its gradient is compared too;
        # gradient checkpointing on: backward recomputes attention inside the Ulysses block
        common = ["worker.actor.global_batch_size=4", "worker.actor.micro_batch_size_per_device_for_update=2",
                  "worker.actor.max_grad_norm=1e9", "worker.actor.entropy_coef=0.01",
                  "worker.actor.model.enable_gradient_checkpointing=true"]
        text_cfg = load_config(["config=configs/cpu_math.yaml", f"worker.actor.model.model_path={text_dir}", *common])
        vl_cfg = load_config(["config=configs/cpu_video.yaml", f"worker.actor.model.model_path={vl_dir}"])
        res: dict[str, object] = {"encodings": _split_encodings(vl_cfg, videos, groups),
                                  "text": _run_model("text", text_cfg, _text_rows(), rank, groups),
                                  "critic": _critic_values(text_cfg, _text_rows(), groups)}
        vl = _video_rows(prompts["video"], prompts["text"], videos)
        for name, frozen in (("video_embeds", "true"), ("video_pixels", "false")):
            cfg = load_config(["config=configs/cpu_video.yaml", f"worker.actor.model.model_path={vl_dir}", *common,
                               f"worker.actor.model.freeze_vision_tower={frozen}"])
            res[name] = _run_model(name, cfg, vl, rank, groups)
        torch.save(res, Path(out_dir) / f"rank_{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def ranks(tiny_qwen2, tmp_path_factory) -> list[dict]:
    import torch.multiprocessing as mp
    from transformers import AutoTokenizer

    from longrl.data.synthetic_video import write_mp4
    from longrl.models.qwen2_5_vl import Qwen2_5_VLAdapter
    from longrl.models.tiny_vl import build_qwen2_5_vl

    root = tmp_path_factory.mktemp("sp_workers")
    vl_dir = build_qwen2_5_vl(root / "vl")
    rng = np.random.default_rng(0)
    videos = []
    # 8 frames of 56x56 -> 4 x 2x2 = 16 video tokens; 8 frames of 84x56 -> 4 x 3x2 = 24 video tokens
    for i, (height, width) in enumerate(((56, 56), (84, 56))):
        videos.append(str(root / f"v{i}.mp4"))
        write_mp4(videos[-1], rng.integers(0, 256, (8, height, width, 3), dtype=np.uint8), 4.0)
    tok = AutoTokenizer.from_pretrained(vl_dir)
    messages = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "How many shapes?"}]}]
    prompt = tok(tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True),
                 add_special_tokens=False).input_ids
    from transformers import AutoConfig

    text_prompt = Qwen2_5_VLAdapter().strip_media(AutoConfig.from_pretrained(vl_dir), prompt)
    mp.spawn(_worker, args=(_free_port(), str(tiny_qwen2), str(vl_dir), videos,
                            {"video": prompt, "text": text_prompt}, str(root)), nprocs=WORLD, join=True)
    return [torch.load(root / f"rank_{r}.pt", weights_only=False) for r in range(WORLD)]


def _assert_close(got: torch.Tensor, want: torch.Tensor, mask: torch.Tensor) -> None:
    assert mask.sum() > 0
    torch.testing.assert_close(got * mask, want * mask, atol=1e-5, rtol=0)


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize(("sp_size", "padding_free"), MODES)
def test_actor_and_reference_log_probs_equal_the_plain_forward(ranks, model, sp_size, padding_free):
    mask = _response_mask(RESPONSE_LENGTHS["text" if model == "text" else "video"])
    for res in ranks:
        case = res[model][(sp_size, padding_free)]
        _assert_close(case["log_probs"], res[model]["plain"], mask)
        _assert_close(case["ref_log_probs"], res[model]["plain"], mask)
        assert (case["log_probs"] * (1 - mask)).abs().sum() == 0  # zero on padding


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize(("sp_size", "padding_free"), MODES[1:])
def test_actor_gradients_equal_those_of_sp1_padded(ranks, model, sp_size, padding_free):
    for res in ranks:
        want, got = res[model][(1, False)], res[model][(sp_size, padding_free)]
        assert want["grads"] and sorted(got["grads"]) == sorted(want["grads"])
        for name, g_ref in want["grads"].items():
            error = (got["grads"][name] - g_ref).norm() / g_ref.norm()
            assert error < 1e-4, f"{model} {name}: relative gradient error {error:.2e}"
        for key in ("pg_loss", "kl_loss", "entropy", "grad_norm"):
            assert got["stats"][f"actor/{key}"] == pytest.approx(want["stats"][f"actor/{key}"], rel=1e-4, abs=1e-7), key


def test_a_trainable_tower_gets_gradients_under_sequence_parallelism(ranks):
    # rows 0, 1 carry videos: the tower's gradient comes from the video tokens, wherever the SP cut falls
    for res in ranks:
        tower = [g for name, g in res["video_pixels"][(2, False)]["grads"].items() if "visual" in name]
        assert tower and sum(float(g.norm()) for g in tower) > 0
        assert not any("visual" in name for name in res["video_embeds"][(2, False)]["grads"])


def test_each_sp_rank_encodes_its_share_of_a_videos_steps_and_the_group_gets_the_whole_encoding(ranks):
    for res in ranks:
        whole, split = res["encodings"][1], res["encodings"][2]
        # 56x56 and 84x56 videos: 4 steps of 4 and of 6 tokens; random videos: 3 and 1 steps of 4 tokens
        assert [t.shape[0] for t in split] == [t.shape[0] for t in whole] == [16, 24, 12, 4]
        for got, want in zip(split, whole):
            torch.testing.assert_close(got, want, atol=1e-5, rtol=0)


@pytest.mark.parametrize(("sp_size", "padding_free"), MODES[1:])
def test_critic_values_equal_those_of_sp1_padded(ranks, sp_size, padding_free):
    mask = _response_mask(RESPONSE_LENGTHS["text"])
    for res in ranks:
        _assert_close(res["critic"][(sp_size, padding_free)], res["critic"][(1, False)], mask)


# ---- single process ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("padding_free", "positions"), [
    # prompts 5, 9, 6, 12 + responses 7, 3, 7, 5 -> rows end at 12, 12, 13, 17; position t predicts token t+1.
    # padded (one position set shared by the rows): [4, 11) | [8, 11) | [5, 12) | [11, 16) = [4, 16) -> 12
    (False, 12),
    # packed (rows start at 0, 12, 24, 37): only each row's own response predictions, 7 + 3 + 7 + 5 = 22
    (True, 22),
])
def test_the_lm_head_runs_only_where_a_response_token_is_predicted(tiny_qwen2, padding_free, positions):
    from transformers import AutoModelForCausalLM

    from longrl.models.adapter import TextAdapter
    from longrl.workers.actor import response_log_probs, response_logits, token_log_probs

    model = AutoModelForCausalLM.from_pretrained(tiny_qwen2, dtype=torch.float32, attn_implementation="sdpa")
    batch = _text_rows()
    seen: list[int] = []
    handle = model.lm_head.register_forward_hook(lambda module, args, out: seen.append(args[0].shape[-2]))
    try:
        got = response_log_probs(model, TextAdapter(), batch, 0, TEMPERATURE, 4, padding_free=padding_free)
    finally:
        handle.remove()
    with torch.no_grad():
        want = token_log_probs(response_logits(model, TextAdapter(), batch, 0, TEMPERATURE), batch["responses"])
    assert seen == [positions]
    _assert_close(got, want, batch["response_mask"])
