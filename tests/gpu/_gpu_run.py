"""What the GPU checks share: one-GPU overrides, the 3-step run and its `GPU-SMOKE` report lines."""

from __future__ import annotations

import math

ONE_GPU = ["trainer.n_gpus_per_node=1", "trainer.device=cuda", "worker.rollout.dtype=bf16",
           "worker.rollout.gpu_memory_utilization=0.3", "trainer.worker_timeout_s=600", "trainer.save_freq=-1",
           "trainer.val_freq=-1", "trainer.logger=[console]"]


def report(name: str, **values: float) -> None:
    print(f"GPU-SMOKE {name}: " + ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                                           for k, v in values.items()))


def three_steps(trainer) -> list[dict[str, float]]:
    steps = [trainer.step(step) for step in (1, 2, 3)]
    for metrics in steps:
        assert all(math.isfinite(metrics[k]) for k in ("actor/pg_loss", "actor/kl_loss", "actor/grad_norm"))
        # the engine slept through the update: less device memory in use after it went to sleep
        assert metrics["perf/gpu_mem_asleep_gb"] < metrics["perf/gpu_mem_awake_gb"]
    assert steps[-1]["perf/weight_sync_mb"] > 0
    return steps


def report_steps(name: str, steps: list[dict[str, float]]) -> None:
    last = steps[-1]
    report(name, gpu_mem_awake_gb=last["perf/gpu_mem_awake_gb"], gpu_mem_asleep_gb=last["perf/gpu_mem_asleep_gb"],
           weight_sync_s=last["timing_s/weight_sync"], weight_sync_mb=last["perf/weight_sync_mb"],
           step_s=last["timing_s/step"])
