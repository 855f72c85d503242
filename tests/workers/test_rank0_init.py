"""fsdp.enable_rank0_init on 2 real ranks (gloo): rank 0 reads the checkpoint, rank 1 builds on the meta device,
and both end with exactly the weights, buffers and log-probs of every rank reading the checkpoint.

The tiny models tie lm_head to the embedding, and their rotary `inv_freq` (text and vision) are non-persistent
buffers that no state dict carries: the two things a meta-device build gets wrong when left alone.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

WORLD = 2


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, port: int, model_dirs: dict[str, str], out_dir: str) -> None:
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
    from transformers import AutoConfig

    import longrl.models.adapter as adapter_module
    from longrl.config import FSDPConfig, load_config
    from longrl.models.adapter import adapter_for
    from longrl.workers.critic import load_value_model
    from longrl.workers.fsdp_worker import init_sharded, load_sharded, shard

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    reads = []  # (empty,) of every load: rank 1 must never read the weights under rank0 init
    real = adapter_module.load_pretrained

    def counted(cls, path, empty=False, **kwargs):
        reads.append(empty)
        return real(cls, path, empty, **kwargs)

    adapter_module.load_pretrained = counted
    try:
        res = {}
        ids = torch.randint(0, 100, (2, 9), generator=torch.Generator().manual_seed(0))
        for name, model_dir in model_dirs.items():
            lora = ["worker.actor.model.lora.rank=4"] if name.endswith("_lora") else []  # adapters on meta too
            cfg = load_config([f"worker.actor.model.model_path={model_dir}", *lora])
            adapter = adapter_for(AutoConfig.from_pretrained(model_dir).model_type)
            for rank0 in (False, True):
                reads.clear()
                model = load_sharded(adapter, model_dir, torch.float32, cfg, trainable=True,
                                     fsdp=FSDPConfig(enable_rank0_init=rank0))
                with torch.no_grad():
                    log_probs = torch.log_softmax(model(input_ids=ids).logits, -1)
                full = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
                res[(name, rank0)] = {
                    "weights": {k: v.clone() for k, v in full.items()},
                    "buffers": {k: b.detach().clone() for k, b in model.named_buffers()},
                    "log_probs": log_probs, "reads": list(reads),
                    "tied": model.lm_head.weight is model.get_input_embeddings().weight}
        # the critic: the value head is random; rank 0's draw reaches every rank
        critic = init_sharded(lambda empty: load_value_model(model_dirs["qwen2"], torch.float32, empty=empty),
                              lambda m: shard(m, adapter_for("qwen2"), cfg, trainable=True),
                              FSDPConfig(enable_rank0_init=True), offload=False)
        res["critic_head"] = get_model_state_dict(critic, options=StateDictOptions(full_state_dict=True))[
            "score.weight"].clone()
        torch.save(res, Path(out_dir) / f"rank_{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def ranks(tiny_qwen2, tmp_path_factory) -> list[dict]:
    import torch.multiprocessing as mp

    from longrl.models.tiny_vl import build_qwen2_5_vl

    vl = build_qwen2_5_vl(tmp_path_factory.mktemp("rank0_vl") / "qwen2_5_vl")
    out = tmp_path_factory.mktemp("rank0_init")
    models = {"qwen2": str(tiny_qwen2), "qwen2_lora": str(tiny_qwen2), "qwen2_5_vl": str(vl)}
    mp.spawn(_worker, args=(_free_port(), models, str(out)),
             nprocs=WORLD, join=True)
    return [torch.load(out / f"rank_{r}.pt") for r in range(WORLD)]


@pytest.mark.parametrize("name", ["qwen2", "qwen2_lora", "qwen2_5_vl"])
def test_rank0_init_gives_every_rank_the_weights_buffers_and_log_probs_of_every_rank_loading(ranks, name):
    for rank, res in enumerate(ranks):
        every, rank0 = res[(name, False)], res[(name, True)]
        assert sorted(rank0["weights"]) == sorted(every["weights"])
        for key, value in every["weights"].items():
            assert torch.equal(rank0["weights"][key], value), f"rank {rank}: {key}"
        non_persistent = sorted(set(every["buffers"]) - set(every["weights"]))
        assert any(b.endswith("inv_freq") for b in non_persistent)  # the case that needs the broadcast
        for key, value in every["buffers"].items():
            assert torch.equal(rank0["buffers"][key], value), f"rank {rank}: buffer {key}"
        assert torch.equal(rank0["log_probs"], every["log_probs"])
        assert rank0["tied"] and every["tied"]
        # every rank reads the checkpoint without rank0 init; with it rank 0 reads it and every rank builds empty
        assert every["reads"] == [False]
        assert rank0["reads"] == ([False, True] if rank == 0 else [True])


def test_rank0_init_builds_the_lora_adapters_on_the_meta_device_too(ranks):
    weights = ranks[0][("qwen2_lora", True)]["weights"]  # full state dicts with cpu_offload reach rank 0 only
    assert any(".lora_A.default." in key for key in weights) and "model.embed_tokens.weight" in weights
    assert not any(".lora_" in key for key in ranks[0][("qwen2", True)]["weights"])


def test_rank0_init_gives_every_rank_rank0s_random_value_head(ranks):
    assert torch.equal(ranks[0]["critic_head"], ranks[1]["critic_head"])
