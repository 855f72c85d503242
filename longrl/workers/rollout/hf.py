"""transformers `generate` as a rollout engine: same interface as vLLM, no extra dependency.

Useful to check vLLM against, and where vLLM is not installed. It holds its own unsharded
copy of the model, refreshed from the trainer after every update.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

from longrl.config import RolloutConfig
from longrl.parallel.device import device, torch_dtype
from longrl.workers.rollout.base import ROLLOUT_ENGINES, Sample, SamplingSpec


@ROLLOUT_ENGINES.register("hf")
class HFRollout:
    def __init__(self, model_path: str, cfg: RolloutConfig, max_model_len: int):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch_dtype(cfg.dtype)).to(device()).eval()
        tok = AutoTokenizer.from_pretrained(model_path)
        self.pad_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        self.eos_id = self.model.generation_config.eos_token_id or tok.eos_token_id

    def load_weights(self, named_tensors: Iterable[tuple[str, torch.Tensor]]) -> None:
        state = dict(named_tensors)
        self.model.load_state_dict(state, strict=False)

    @torch.no_grad()
    def generate(self, prompts: list[list[int]], spec: SamplingSpec, seed: int) -> list[list[Sample]]:
        width = max(len(p) for p in prompts)
        ids = torch.full((len(prompts), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for i, p in enumerate(prompts):  # left padding: generation continues right after each prompt
            ids[i, width - len(p):] = torch.tensor(p)
            mask[i, width - len(p):] = 1
        greedy = spec.temperature == 0
        kwargs = dict(do_sample=not greedy, max_new_tokens=spec.max_tokens, num_return_sequences=spec.n,
                      pad_token_id=self.pad_id, output_logits=True, return_dict_in_generate=True)
        if not greedy:
            kwargs.update(temperature=spec.temperature, top_p=spec.top_p, top_k=spec.top_k if spec.top_k > 0 else 0)
        if spec.ignore_eos:
            kwargs.update(min_new_tokens=spec.max_tokens)
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            out = self.model.generate(input_ids=ids.to(device()), attention_mask=mask.to(device()), **kwargs)
        new = out.sequences[:, width:].cpu()
        logits = torch.stack(out.logits, 1).float().cpu() / (spec.temperature or 1.0)  # [B*n, T, V]
        logp = torch.gather(torch.log_softmax(logits, -1), -1, new[..., None]).squeeze(-1)
        samples = []
        for row, lp in zip(new.tolist(), logp.tolist()):
            length = next((i + 1 for i, t in enumerate(row) if t == self.eos_id), len(row))
            samples.append(Sample(row[:length], lp[:length]))
        return [samples[i * spec.n:(i + 1) * spec.n] for i in range(len(prompts))]
