"""The actor update with dynamic batching on and off, side by side, on responses of 16 to 1024 tokens (issue 17).

    python3 bench/dynamic_batching.py [--rows 64] [--micro 8] [--threads 1]

One on-policy update (one mini-batch, one optimizer step) of the peer_trl.py 3.3M-parameter Qwen2 in fp32 over
`rows` responses whose lengths are spread evenly from 16 to 1024 tokens (shuffled, after 21-token prompts), through
longrl's Actor in this process, for each of padded and padding-free forwards: fixed micro-batches of `micro` rows
(worker.actor.dynamic_batching=false) against micro-batches packed to the same token budget (true). Prints the
update's seconds, the forwards it ran and the tokens it computed (pads included), and the loss of each, which must
agree (the weighting is exact; tests/workers/test_micro_batches.py checks the gradient).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
VENV_PY = REPO / ".venv" / "bin" / "python"
if Path(sys.prefix).resolve() != (REPO / ".venv").resolve() and VENV_PY.exists() and "LONGRL_BENCH_CHILD" not in os.environ:
    # `python3 bench/dynamic_batching.py` from a clean clone: rerun in the project's environment
    env = {**os.environ, "PYTHONPATH": str(REPO), "LONGRL_BENCH_CHILD": "1", "TOKENIZERS_PARALLELISM": "false"}
    os.execve(str(VENV_PY), [str(VENV_PY), *sys.argv], env)
sys.path[:0] = [str(REPO), str(REPO / "bench")]

import torch  # noqa: E402

import peer_trl  # noqa: E402
from longrl.config import load_config  # noqa: E402
from longrl.models.adapter import adapter_for  # noqa: E402
from longrl.protocol import Batch  # noqa: E402
from longrl.workers.actor import Actor  # noqa: E402
from longrl.workers.micro_batches import micro_batches  # noqa: E402

PROMPT_LEN, SHORTEST, LONGEST = 21, 16, 1024


def batch_of(rows: int) -> Batch:
    """`rows` responses of 16..1024 tokens in a shuffled order, random tokens, advantages of either sign."""
    g = torch.Generator().manual_seed(0)
    lengths = torch.linspace(SHORTEST, LONGEST, rows).round().long()[torch.randperm(rows, generator=g)]
    mask = (torch.arange(LONGEST) < lengths[:, None]).long()
    prompts = torch.randint(3, 500, (rows, PROMPT_LEN), generator=g).tolist()
    return Batch({"responses": torch.randint(3, 500, mask.shape, generator=g) * mask, "response_mask": mask,
                  "advantages": torch.randn(rows, 1, generator=g) * mask},
                 {"prompt_ids": prompts})


def run(model_dir: Path, batch: Batch, micro: int, dynamic: bool, padding_free: bool) -> dict[str, float]:
    cfg = load_config([f"worker.actor.model.model_path={model_dir}", "algorithm.disable_kl=true"])
    actor_cfg = dataclasses.replace(cfg.worker.actor, global_batch_size=len(batch), dynamic_batching=dynamic,
                                    micro_batch_size_per_device_for_update=micro, padding_free=padding_free)
    adapter = adapter_for("qwen2")
    torch.manual_seed(0)
    actor = Actor(adapter.load(str(model_dir), torch.float32), adapter, actor_cfg, cfg.algorithm, 0, 1, 10,
                  max_response_length=LONGEST, responses_per_prompt=1)
    micros, _ = micro_batches(batch, micro, dynamic, padding_free)
    computed = sum(int(m["response_mask"].sum()) + PROMPT_LEN * len(m) if padding_free
                   else len(m) * (PROMPT_LEN + m["responses"].shape[1]) for m in micros)
    start = time.perf_counter()
    stats = actor.update(batch, temperature=1.0)
    return {"seconds": time.perf_counter() - start, "forwards": len(micros), "tokens": computed,
            "loss": stats["actor/pg_loss"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=64)
    parser.add_argument("--micro", type=int, default=8, help="rows per fixed micro-batch (the budget: x longest)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (one per worker, as in the trainer)")
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "bench_dynamic_batching")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    print(f"load before: {os.getloadavg()[0]:.2f} (1-min average, {os.cpu_count()} cores)", flush=True)
    model_dir, _ = peer_trl.assets(args.out)
    batch = batch_of(args.rows)
    real = int(batch["response_mask"].sum()) + PROMPT_LEN * args.rows
    print(f"update of {args.rows} responses of {SHORTEST}..{LONGEST} tokens ({real} real tokens), fixed micro-batches "
          f"of {args.micro} rows vs packed to {args.micro} x the longest row's tokens, {args.threads} thread(s)")
    print(f"  {'forward':13s}{'dynamic':>8s}{'seconds':>9s}{'forwards':>9s}{'tokens':>8s}{'pg_loss':>11s}")
    for padding_free in (False, True):
        results = {}
        for dynamic in (False, True):
            r = results[dynamic] = run(model_dir, batch, args.micro, dynamic, padding_free)
            print(f"  {'padding-free' if padding_free else 'padded':13s}{'on' if dynamic else 'off':>8s}"
                  f"{r['seconds']:9.2f}{r['forwards']:9d}{r['tokens']:8d}{r['loss']:11.6f}", flush=True)
        print(f"  {'':13s}speed-up on/off: {results[False]['seconds'] / results[True]['seconds']:.2f}x")
    print(f"load after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
