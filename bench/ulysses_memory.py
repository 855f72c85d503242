"""Activation memory per rank of one long sequence, Ulysses sp=1 vs sp=2, side by side in one run.

    python bench/ulysses_memory.py [--lengths 1024,2048,4096,8192] [--budget-mib 96]

Two gloo ranks on CPU run forward + backward of the actor's log-prob loss (`sp_token_log_probs`) on one
sequence of each length: first sp=1 on rank 0 alone, then sp=2 over both ranks. Activation memory is
measured exactly and deterministically: every tensor autograd saves for backward passes through
`torch.autograd.graph.saved_tensors_hooks`, and the bytes of their distinct storages (parameters excluded)
are summed; that sum is what a rank holds at the end of the forward pass, its activation peak. The
longest length that fits the per-rank budget is read off the measured grid.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import socket
import tempfile
from pathlib import Path

import torch

WORLD = 2
MIB = 2**20


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def saved_activation_bytes(model: torch.nn.Module, run) -> int:
    """Bytes of the distinct storages autograd saves while `run()` builds the graph (parameters excluded)."""
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if storage.data_ptr() not in params:
            seen[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = run()
    loss.backward()
    model.zero_grad(set_to_none=True)
    return sum(seen.values())


def _measure(model, length: int, sp) -> int:
    from longrl.models.ulysses_attention import sp_token_log_probs

    generator = torch.Generator().manual_seed(length)
    ids = torch.randint(0, model.config.vocab_size, (1, length), generator=generator)
    positions = torch.arange(length)[None]

    def run() -> torch.Tensor:
        log_probs, _ = sp_token_log_probs(model, ids, positions, None, sp)
        return -log_probs.mean()

    return saved_activation_bytes(model, run)


def _worker(rank: int, port: int, model_dir: str, lengths: list[int], out_dir: str) -> None:
    import torch.distributed as dist
    from transformers import AutoModelForCausalLM

    from longrl.parallel.ulysses import SPGroup, init_sp_groups

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=WORLD, timeout=datetime.timedelta(seconds=600))
    try:
        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32, attn_implementation="sdpa")
        sp = init_sp_groups(2)
        result = {"sp1": {}, "sp2": {}}
        for length in lengths:
            if rank == 0:  # sp=1 needs one rank; the other waits instead of competing for the CPU
                result["sp1"][length] = _measure(model, length, SPGroup(0, 1, None))
            dist.barrier()
            result["sp2"][length] = _measure(model, length, sp)
        (Path(out_dir) / f"rank_{rank}.json").write_text(json.dumps(result))
    finally:
        dist.destroy_process_group()


def _longest(per_length: dict[int, int], budget: int) -> int | None:
    fits = [length for length, used in per_length.items() if used <= budget]
    return max(fits) if fits else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", default="1024,2048,4096,8192", help="sequence lengths, comma separated")
    parser.add_argument("--budget-mib", type=float, default=96.0, help="activation budget per rank (MiB)")
    args = parser.parse_args()
    lengths = [int(x) for x in args.lengths.split(",")]

    import torch.multiprocessing as mp

    from longrl.models.tiny import build_qwen2

    with tempfile.TemporaryDirectory() as tmp:
        model_dir = build_qwen2(Path(tmp) / "qwen2", max_position_embeddings=max(lengths))
        mp.spawn(_worker, args=(_free_port(), str(model_dir), lengths, tmp), nprocs=WORLD, join=True)
        ranks = [json.loads((Path(tmp) / f"rank_{r}.json").read_text()) for r in range(WORLD)]

    sp1 = {int(k): v for k, v in ranks[0]["sp1"].items()}
    sp2 = {int(k): max(r["sp2"][k] for r in ranks) for k in ranks[0]["sp2"]}  # the fullest rank counts
    print("tiny Qwen2 (hidden 128, 2 layers, 4 heads / 2 KV heads, fp32), forward+backward of token log-probs,")
    print("saved activations per rank (MiB):")
    print(f"{'length':>8} {'sp=1':>10} {'sp=2 r0':>10} {'sp=2 r1':>10} {'sp2/sp1':>8}")
    for length in lengths:
        r0, r1 = (ranks[r]["sp2"][str(length)] / MIB for r in range(WORLD))
        print(f"{length:>8} {sp1[length] / MIB:>10.2f} {r0:>10.2f} {r1:>10.2f} {sp2[length] / sp1[length]:>8.3f}")
    budget = int(args.budget_mib * MIB)
    print(f"longest measured length within {args.budget_mib:g} MiB per rank: "
          f"sp=1 {_longest(sp1, budget)}, sp=2 {_longest(sp2, budget)}")
    print(json.dumps({"sp1_bytes": sp1, "sp2_bytes_max_rank": sp2,
                      "ratio": {k: round(sp2[k] / sp1[k], 4) for k in lengths}}))


if __name__ == "__main__":
    main()
