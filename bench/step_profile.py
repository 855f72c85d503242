"""Where one longrl RL step of the peer_trl.py workload goes, and the issue-17 goals as measured ratios.

    python3 bench/step_profile.py [--out runs/bench_step_profile] [-- key=value ...]

The workload of bench/peer_trl.py (3.3M-param Qwen2 fp32, 64 prompts x 8 samples x 256 tokens, KL 0.04, one
optimizer step per RL step) runs through longrl's real trainer (RayTrainer: Ray, FSDP2, vLLM) in this process,
with the worker class wrapped so each worker times its own verbs. Step 1 warms up; step 2 is profiled:

- phases: rollout (of which weight sync), old/ref log-probs, update, reward wait, and driver + Ray overhead =
  the step's wall time minus the slowest worker's own time in each verb of the step;
- rollout tokens/s inside the trainer against plain transformers `generate` of the same prompts, model and sampling
  in the same worker processes (goal: >= 1.5x);
- the update's achieved FLOP/s, 6 x parameters x tokens + 12 x layers x width x sum of squared lengths (attention),
  as a fraction of this CPU's GEMM peak, measured first with a torch matmul in fp32 and bf16 (goal: >= 30%);
- the bf16 lever (worker.actor.fsdp.mp_param_dtype / worker.ref.fsdp.mp_param_dtype = bf16): one micro-batch of
  the step's shape through the reference forward and the update's forward+backward in fp32 and in bf16 compute
  with fp32 master weights, side by side: seconds, log-prob and loss differences.

The goal "step <= 0.5 x TRL's" is read from bench/peer_trl.py's last results (runs/bench_peer_trl/results.json).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
VENV_PY = REPO / ".venv" / "bin" / "python"
if Path(sys.prefix).resolve() != (REPO / ".venv").resolve() and VENV_PY.exists() and "LONGRL_BENCH_CHILD" not in os.environ:
    # `python3 bench/step_profile.py` from a clean clone: rerun in the project's environment
    env = {**os.environ, "PYTHONPATH": str(REPO), "LONGRL_BENCH_CHILD": "1", "TOKENIZERS_PARALLELISM": "false"}
    os.execve(str(VENV_PY), [str(VENV_PY), *sys.argv], env)
sys.path[:0] = [str(REPO), str(REPO / "bench")]

import safetensors.torch  # noqa: E402
import torch  # noqa: E402
from transformers import AutoConfig  # noqa: E402

import peer_trl  # noqa: E402
from longrl.controller.dispatch import Dispatch, verb  # noqa: E402
from longrl.protocol import Batch  # noqa: E402
from longrl.workers.fsdp_worker import HybridWorker  # noqa: E402

STEP_VERBS = ("generate", "log_probs", "ref_log_probs", "update_actor")


def gemm_peak(dtype: torch.dtype, threads: int, size: int) -> float:
    """Best FLOP/s of a square matmul on `threads` threads."""
    torch.set_num_threads(threads)
    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    a @ b
    best = min(_seconds(lambda: a @ b) for _ in range(5))
    return 2 * size ** 3 / best


def _seconds(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


class TimedWorker(HybridWorker):
    """HybridWorker whose step verbs record their own seconds (and the update its tokens); plus plain HF generate."""

    def _timed(self, name: str, fn, *args):
        start = time.perf_counter()
        try:
            return fn(*args)
        finally:
            busy = self.__dict__.setdefault("busy", {})
            busy[name] = busy.get(name, 0.0) + time.perf_counter() - start

    @verb(Dispatch.SPLIT_BY_DP)
    def generate(self, prompts, spec):
        return self._timed("generate", super().generate, prompts, spec)

    @verb(Dispatch.SPLIT_BY_DP)
    def log_probs(self, batch):
        return self._timed("log_probs", super().log_probs, batch)

    @verb(Dispatch.SPLIT_BY_DP)
    def ref_log_probs(self, batch):
        return self._timed("ref_log_probs", super().ref_log_probs, batch)

    @verb(Dispatch.SPLIT_BY_DP)
    def update_actor(self, batch):
        lengths = torch.tensor([len(p) for p in batch["prompt_ids"]]) + batch["response_mask"].sum(-1)
        busy = self.__dict__.setdefault("busy", {})
        busy["update_tokens"] = float(lengths.sum())
        busy["update_sq_tokens"] = float((lengths.double() ** 2).sum())
        return self._timed("update_actor", super().update_actor, batch)

    @verb(Dispatch.ALL)
    def take_busy(self) -> dict[str, float]:
        busy, self.busy = self.__dict__.get("busy", {}), {}
        return busy

    @verb(Dispatch.SPLIT_BY_DP)
    def hf_generate(self, prompts: Batch, spec) -> Batch:
        """Plain transformers generate of this rank's prompts x spec.n (same model file, sampling, threads)."""
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(self.cfg.worker.actor.model.model_path, dtype=torch.float32).eval()
        ids = list(prompts["prompt_ids"])
        width = max(len(p) for p in ids)
        x = torch.full((len(ids), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros_like(x)
        for i, p in enumerate(ids):
            x[i, width - len(p):], mask[i, width - len(p):] = torch.tensor(p), 1
        start = time.perf_counter()
        with torch.no_grad():
            out = model.generate(input_ids=x, attention_mask=mask, do_sample=True, temperature=spec.temperature,
                                 top_p=1.0, top_k=0, max_new_tokens=spec.max_tokens, min_new_tokens=spec.max_tokens,
                                 num_return_sequences=spec.n, pad_token_id=self.pad_id)
        seconds = time.perf_counter() - start
        # the rollout engine on the same prompts right after, for a comparison at the same moment (machine load)
        start = time.perf_counter()
        engine = super().generate(prompts, spec)
        engine_s = time.perf_counter() - start
        return Batch({"seconds": torch.full((len(ids),), seconds),  # tokens: this prompt's n responses
                      "tokens": torch.full((len(ids),), float(out.shape[1] - width) * spec.n),
                      "engine_seconds": torch.full((len(ids),), engine_s),
                      "engine_tokens": engine["response_mask"].sum(-1).view(len(ids), spec.n).sum(-1).float()})


def bf16_lever(model_dir: Path, rows: int, prompt_len: int, micro: int) -> dict[str, float]:
    """One micro-batch of `rows` responses of 256 tokens after `prompt_len`-token prompts through the reference
    forward and the update's forward+backward, in fp32 and with mp_param_dtype=bf16 (FSDP2, fp32 masters), in a
    gloo world of one on one thread; seconds (scaled to a `micro`-row micro-batch) and differences."""
    import torch.distributed as dist

    from longrl.algorithms import compute_policy_loss, kl_penalty
    from longrl.config import load_config
    from longrl.models.adapter import adapter_for
    from longrl.workers.actor import response_log_probs_and_entropy
    from longrl.workers.fsdp_worker import shard

    torch.set_num_threads(1)
    store = Path(f"/tmp/longrl-bench-rdzv-{os.getpid()}")
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=0, world_size=1)
    adapter = adapter_for("qwen2")
    g = torch.Generator().manual_seed(0)
    batch = Batch({"responses": torch.randint(3, 500, (rows, peer_trl.NEW_TOKENS), generator=g),
                   "response_mask": torch.ones(rows, peer_trl.NEW_TOKENS, dtype=torch.long)},
                  {"prompt_ids": torch.randint(3, 500, (rows, prompt_len), generator=g).tolist()})
    advantages = torch.randn(rows, 1, generator=g).expand(-1, peer_trl.NEW_TOKENS)
    out: dict[str, dict[str, object]] = {}
    try:
        for dtype in ("null", "bf16"):
            cfg = load_config([f"worker.actor.fsdp.mp_param_dtype={dtype}"])
            model = shard(adapter.load(str(model_dir), torch.float32, False), adapter, cfg, trainable=True)
            with torch.no_grad():
                ref_s = _seconds(lambda: response_log_probs_and_entropy(model, adapter, batch, 0, 1.0))
            start = time.perf_counter()
            lp, _ = response_log_probs_and_entropy(model, adapter, batch, 0, 1.0, with_entropy=True)
            if dtype == "null":  # pi_old and the reference: fp32's log-probs (and a perturbed copy), for both runs
                old = lp.detach()
                ref = old + 0.1 * torch.randn(old.shape, generator=g)
            loss, _ = compute_policy_loss(lp, old, advantages, batch["response_mask"], cfg.worker.actor)
            loss = loss + peer_trl.KL_COEF * kl_penalty(lp, ref, "low_var_kl").mean()
            loss.backward()
            update_s = time.perf_counter() - start
            out[dtype] = {"lp": lp.detach(), "loss": float(loss.detach()), "ref_s": ref_s * micro / rows,
                          "update_s": update_s * micro / rows}
    finally:
        dist.destroy_process_group()
        store.unlink(missing_ok=True)
    fp32, bf16 = out["null"], out["bf16"]
    return {"fp32_ref_s": fp32["ref_s"], "bf16_ref_s": bf16["ref_s"], "fp32_update_s": fp32["update_s"],
            "bf16_update_s": bf16["update_s"], "lp_max_diff": float((bf16["lp"] - fp32["lp"]).abs().max()),
            "lp_mean_diff": float((bf16["lp"] - fp32["lp"]).abs().mean()),
            "loss_diff": abs(bf16["loss"] - fp32["loss"]), "loss": fp32["loss"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "bench_step_profile")
    parser.add_argument("--bf16-rows", type=int, default=2, help="rows of the bf16 lever's micro-batch (slow on CPU)")
    parser.add_argument("extra", nargs="*", help="longrl key=value overrides (after --)")
    args = parser.parse_args()
    os.chdir(REPO)  # the config's relative paths (configs/, examples/)
    args.out.mkdir(parents=True, exist_ok=True)
    wall = time.monotonic()
    print(f"load before: {os.getloadavg()[0]:.2f} (1-min average, {os.cpu_count()} cores)", flush=True)
    model_dir, data = peer_trl.assets(args.out)

    peaks = {(dt, n): gemm_peak(dt, n, 1024 if dt == torch.float32 else 256)
             for dt in (torch.float32, torch.bfloat16) for n in (1, 2)}
    print("GEMM peak GFLOP/s: " + ", ".join(f"{str(dt).removeprefix('torch.')} x{n} threads {v / 1e9:.1f}"
                                             for (dt, n), v in peaks.items()), flush=True)
    lever = bf16_lever(model_dir, args.bf16_rows, prompt_len=16, micro=peer_trl.MICRO)

    import ray

    from longrl.config import load_config
    from longrl.trainer.ray_trainer import RayTrainer
    from longrl.workers.rollout import SamplingSpec

    overrides = peer_trl.longrl_overrides(model_dir, data, args.out / "longrl", steps=2)
    cfg = load_config([*overrides, *args.extra])
    trainer = RayTrainer(cfg)
    trainer.kind.worker_class = lambda: TimedWorker
    try:
        trainer.start_workers()
        trainer.step_count = 1
        trainer.step(1)  # warm-up
        trainer.workers.take_busy()
        trainer.step_count = 2
        metrics = trainer.step(2)
        busy = trainer.workers.take_busy()
        spec = SamplingSpec.from_config(cfg.worker.rollout, cfg.data.max_response_length)
        hf = trainer.workers.hf_generate(trainer.next_prompts(3, 0), spec)
    finally:
        trainer.shutdown()
        ray.shutdown()

    step = metrics["timing_s/step"]
    worker_own = {v: max(b.get(v, 0.0) for b in busy) for v in STEP_VERBS}
    overhead = step - sum(worker_own.values())
    rows = [("rollout (generate verb, driver)", metrics.get("timing_s/gen", 0.0), worker_own["generate"]),
            ("  of which weight sync", metrics.get("timing_s/weight_sync", 0.0), None),
            ("old log-probs", metrics.get("timing_s/old", 0.0), worker_own["log_probs"]),
            ("ref log-probs", metrics.get("timing_s/ref", 0.0), worker_own["ref_log_probs"]),
            ("reward (wait)", metrics.get("timing_s/reward", 0.0), None),
            ("advantages", metrics.get("timing_s/adv", 0.0), None),
            ("update", metrics.get("timing_s/update", 0.0), worker_own["update_actor"]),
            ("driver + Ray overhead", overhead, None), ("step", step, sum(worker_own.values()))]
    print("\nlongrl step 2 of the peer_trl workload (seconds; driver = as the trainer times it, worker = the "
          "slowest rank's own time in the verb)")
    print(f"  {'phase':34s}{'driver':>9s}{'worker':>9s}")
    for name, driver, worker in rows:
        print(f"  {name:34s}{driver:9.2f}" + (f"{worker:9.2f}" if worker is not None else f"{'':9s}"))

    tokens = peer_trl.PROMPTS * peer_trl.SAMPLES * peer_trl.NEW_TOKENS
    gen_tps = tokens / metrics["timing_s/gen"]
    hf_s = float(hf["seconds"].max())
    hf_tps = float(hf["tokens"].sum()) / hf_s
    engine_tps = float(hf["engine_tokens"].sum()) / float(hf["engine_seconds"].max())
    hf_cfg = AutoConfig.from_pretrained(model_dir)
    n_params = sum(t.numel() for t in safetensors.torch.load_file(str(model_dir / "model.safetensors")).values())
    update_tokens = sum(b.get("update_tokens", 0.0) for b in busy)
    sq = sum(b.get("update_sq_tokens", 0.0) for b in busy)
    width = hf_cfg.num_attention_heads * hf_cfg.head_dim
    flops = 6 * n_params * update_tokens + 12 * hf_cfg.num_hidden_layers * width * sq
    update_s = worker_own["update_actor"]
    compute = "bf16" if "mp_param_dtype=bf16" in " ".join(args.extra) else "fp32"
    # the machine's peak: the 2 workers run one thread each, so twice one thread's (the 2-thread matmul reads low
    # when other processes take a core)
    dt = torch.bfloat16 if compute == "bf16" else torch.float32
    peak = max(peaks[(dt, 2)], 2 * peaks[(dt, 1)])
    achieved = flops / update_s

    print(f"\nrollout: {gen_tps:.0f} tokens/s in the trainer (generate phase incl. weight sync) vs plain transformers "
          f"generate {hf_tps:.0f} tokens/s (same prompts and model, 2 workers x 1 thread, slowest rank {hf_s:.1f} s); "
          f"the engine on those prompts right after it: {engine_tps:.0f} tokens/s")
    print(f"update: {flops / 1e12:.2f} TFLOP ({n_params / 1e6:.2f}M params x {update_tokens:.0f} tokens, attention "
          f"included) in {update_s:.1f} s = {achieved / 1e9:.1f} GFLOP/s; 2-core {compute} GEMM peak "
          f"{peak / 1e9:.1f} GFLOP/s")
    print(f"\nbf16 lever (one micro-batch of {peer_trl.MICRO} rows x {16 + peer_trl.NEW_TOKENS} tokens, measured on "
          f"{args.bf16_rows} rows, 1 thread): reference forward fp32 {lever['fp32_ref_s']:.2f} s vs bf16 "
          f"{lever['bf16_ref_s']:.2f} s; update forward+backward fp32 {lever['fp32_update_s']:.2f} s vs bf16 "
          f"{lever['bf16_update_s']:.2f} s ({lever['bf16_update_s'] / lever['fp32_update_s']:.1f}x slower); "
          f"log-prob |diff| max {lever['lp_max_diff']:.2e} mean {lever['lp_mean_diff']:.2e}; loss diff "
          f"{lever['loss_diff']:.2e} (loss {lever['loss']:.4f})")

    goals = []
    peer = REPO / "runs" / "bench_peer_trl" / "results.json"
    if peer.exists():
        res = json.loads(peer.read_text())
        ratio = res["longrl"]["step"] / res["TRL"]["step"]
        goals.append(("longrl step / TRL step (peer_trl.py)", ratio, "<= 0.5", ratio <= 0.5))
    else:
        print("(run bench/peer_trl.py for the TRL goal)")
    goals += [("rollout tokens/s / transformers generate", gen_tps / hf_tps, ">= 1.5", gen_tps / hf_tps >= 1.5),
              ("  same, engine right after HF (paired)", engine_tps / hf_tps, ">= 1.5", engine_tps / hf_tps >= 1.5),
              (f"update FLOP/s / {compute} GEMM peak", achieved / peak, ">= 0.30", achieved / peak >= 0.30),
              ("driver + Ray overhead (s per step)", overhead, "< 0.5", overhead < 0.5)]
    print(f"\n  {'goal':44s}{'measured':>10s}{'target':>9s}")
    for name, value, target, met in goals:
        print(f"  {name:44s}{value:10.2f}{target:>9s}  {'met' if met else 'not met'}")
    result = {"phases": {n: d for n, d, _ in rows}, "worker": worker_own, "gen_tps": gen_tps, "hf_tps": hf_tps, "engine_tps": engine_tps,
              "update_gflops": achieved / 1e9, "peaks_gflops": {f"{dt}x{n}": v / 1e9 for (dt, n), v in peaks.items()},
              "bf16": lever, "overhead_s": overhead}
    (args.out / "results.json").write_text(json.dumps(result, indent=1, default=str))
    print(f"load after: {os.getloadavg()[0]:.2f}; wall {time.monotonic() - wall:.0f} s")


if __name__ == "__main__":
    main()
