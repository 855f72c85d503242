"""transformers `generate` as a rollout engine: same interface as vLLM, no extra dependency.

Useful to check vLLM against, and where vLLM is not installed. It holds its own unsharded
copy of the model, refreshed from the trainer after every update.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

from longrl.config import RolloutConfig
from longrl.parallel.device import device, device_type, torch_dtype
from longrl.workers.rollout.base import ROLLOUT_ENGINES, Sample, SamplingSpec


@ROLLOUT_ENGINES.register("hf")
class HFRollout:
    def __init__(self, model_path: str, cfg: RolloutConfig, max_model_len: int):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch_dtype(cfg.dtype)).to(device()).eval()
        tok = AutoTokenizer.from_pretrained(model_path)
        self.pad_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        self.eos_ids = eos_token_ids(self.model.generation_config.eos_token_id, tok.eos_token_id)

    @torch.no_grad()
    def load_weights(self, named_tensors: Iterable[tuple[str, torch.Tensor]]) -> None:
        """Copy each tensor into the parameter of its name as it arrives; a name the model lacks, or a parameter
        left without a tensor, is an error (a silent mismatch would train one model and sample from another)."""
        state = self.model.state_dict()  # views of the parameters (a tied head appears under both names)
        unknown = []
        missing = set(state)
        for name, tensor in named_tensors:
            if name not in state:
                unknown.append(name)
                continue
            state[name].copy_(tensor)
            missing.discard(name)
        if unknown or missing:
            raise RuntimeError(f"the hf rollout engine got weights its model does not have: {sorted(unknown)[:5]} "
                               f"and none for {sorted(missing)[:5]}; the trainer's and the engine's models differ "
                               f"(worker.actor.model.model_path is the checkpoint of both)")

    def sleep(self) -> None:
        if device_type() == "cuda":  # the engine's unsharded copy leaves the GPU during training
            self.model.to("cpu")

    def wake_up(self, tags: list[str]) -> None:
        if device_type() == "cuda" and "weights" in tags:
            self.model.to(device())

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
            length = next((i + 1 for i, t in enumerate(row) if t in self.eos_ids), len(row))  # pads follow EOS
            samples.append(Sample(row[:length], lp[:length]))
        return [samples[i * spec.n:(i + 1) * spec.n] for i in range(len(prompts))]


def eos_token_ids(generation_eos: int | list[int] | None, tokenizer_eos: int | None) -> set[int]:
    """Every token that ends a response: generation_config's eos_token_id is a list for real checkpoints
    (Qwen2.5: <|im_end|> and <|endoftext|>), an int or None for others."""
    if generation_eos is None:
        generation_eos = tokenizer_eos
    ids = generation_eos if isinstance(generation_eos, list) else [generation_eos]
    return {i for i in ids if i is not None}
