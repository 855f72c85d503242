"""The colocated worker on a real Ray cluster of 2 CPU workers: FSDP actor, reference, in-process vLLM.

One worker group serves every test of this module (starting vLLM costs ~20 s a rank).
"""

from __future__ import annotations

import pytest
import ray
import torch

from longrl.config import load_config
from longrl.controller.worker_group import ResourcePool, WorkerGroup, init_ray
from longrl.protocol import Batch
from longrl.workers.fsdp_worker import HybridWorker
from longrl.workers.rollout import SamplingSpec

pytestmark = pytest.mark.e2e

GREEDY = SamplingSpec(n=1, temperature=0.0, top_p=1.0, top_k=-1, max_tokens=12)
SAMPLED = SamplingSpec(n=4, temperature=1.0, top_p=1.0, top_k=-1, max_tokens=16)


@pytest.fixture(scope="module")
def setup(tiny_qwen2):
    cfg = load_config(["config=configs/cpu_math.yaml", f"worker.actor.model.model_path={tiny_qwen2}",
                       "worker.actor.optim.lr=0.05", "worker.actor.global_batch_size=2",
                       "worker.actor.micro_batch_size_per_device_for_update=2"])
    init_ray(None, num_cpus=4)
    group = WorkerGroup(HybridWorker, ResourcePool(1, 2, use_gpu=False), 1,
                        {"VLLM_ENABLE_V1_MULTIPROCESSING": "0", "VLLM_CPU_KVCACHE_SPACE": "1", "OMP_NUM_THREADS": "1"},
                        args=(cfg,), call_timeout_s=300)
    info = group.setup(10)
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_qwen2)
    prompts = [tok.apply_chat_template([{"role": "user", "content": f"What is {i} + {2 * i}?"}],
                                       add_generation_prompt=True, tokenize=False) for i in range(4)]
    batch = Batch(objects={"prompt_ids": [tok(p, add_special_tokens=False).input_ids for p in prompts]})
    yield group, batch, info, tiny_qwen2
    group.shutdown()
    ray.shutdown()


def hf_greedy(model_dir_or_weights, base_dir, prompts: list[list[int]], max_tokens: int) -> list[list[int]]:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    if isinstance(model_dir_or_weights, dict):
        model.load_state_dict(model_dir_or_weights, strict=False)
    out = []
    for p in prompts:
        ids = model.generate(torch.tensor([p]), max_new_tokens=max_tokens, do_sample=False,
                             pad_token_id=model.config.pad_token_id)[0, len(p):].tolist()
        eos = model.generation_config.eos_token_id
        out.append(ids[: ids.index(eos) + 1] if eos in ids else ids)
    return out


def test_workers_join_one_world_and_report_their_rank(setup):
    _, _, info, _ = setup
    assert [i["rank"] for i in info] == [0, 1]


def test_actor_log_probs_match_the_ones_vllm_sampled_with(setup):
    group, batch, _, _ = setup
    rollout = group.generate(batch, SAMPLED)
    assert len(rollout) == 16 and list(rollout["prompt_ids"][:4]) == [batch["prompt_ids"][0]] * 4
    old = group.log_probs(rollout)["old_log_probs"]
    mask = rollout["response_mask"].bool()
    diff = (old - rollout["rollout_log_probs"])[mask].abs().max()
    assert diff < 1e-3, f"trainer vs vLLM log-prob max abs diff {diff}"


def test_after_an_update_vllm_greedy_equals_transformers_greedy_of_the_new_weights(setup):
    group, batch, _, base = setup
    before = group.generate(batch, GREEDY)
    rollout = group.generate(batch, SAMPLED)
    rollout = rollout.union(group.log_probs(rollout)).union(group.ref_log_probs(rollout))
    # push every sampled token down hard: lr 0.05 changes the greedy continuation
    rollout["advantages"] = -torch.ones_like(rollout["old_log_probs"]) * rollout["response_mask"]
    metrics = group.update_actor(rollout)
    assert {"actor/pg_loss", "actor/kl_loss", "actor/entropy", "actor/grad_norm", "actor/lr",
            "actor/pg_clipfrac"} <= set(metrics[0])
    after = group.generate(batch, GREEDY)
    weights = group.full_weights()[0]
    lengths = after["response_mask"].sum(-1).tolist()
    vllm_tokens = [r[:n] for r, n in zip(after["responses"].tolist(), lengths)]
    assert vllm_tokens == hf_greedy(weights, base, list(batch["prompt_ids"]), GREEDY.max_tokens)
    assert not torch.equal(before["responses"], after["responses"]), "rollout still sees the old weights"


def test_merged_checkpoint_loads_in_transformers_and_vllm_with_the_actors_outputs(setup, tmp_path):
    from transformers import AutoModelForCausalLM

    from longrl.checkpoint.merger import merge
    from longrl.workers.actor import response_log_probs
    from longrl.models.adapter import TextAdapter

    group, batch, _, _ = setup
    group.save_checkpoint(str(tmp_path))
    merged = merge(tmp_path / "actor")
    rollout = group.generate(batch, SAMPLED)
    actor_lp = group.log_probs(rollout)["old_log_probs"]
    hf = AutoModelForCausalLM.from_pretrained(merged, dtype=torch.float32)
    hf_lp = response_log_probs(hf, TextAdapter(), rollout, hf.config.pad_token_id, 1.0, 8)
    assert (hf_lp - actor_lp).abs().max() < 1e-5

    from vllm import LLM, SamplingParams

    llm = LLM(model=str(merged), dtype="float32", max_model_len=256, enforce_eager=True, seed=0)
    outs = llm.generate([{"prompt_token_ids": p} for p in batch["prompt_ids"]],
                        SamplingParams(temperature=0.0, max_tokens=GREEDY.max_tokens), use_tqdm=False)
    greedy = group.generate(batch, GREEDY)
    lengths = greedy["response_mask"].sum(-1).tolist()
    assert [list(o.outputs[0].token_ids) for o in outs] == [r[:n] for r, n in zip(greedy["responses"].tolist(), lengths)]
    del llm
