"""The on-policy update (one epoch of one mini-batch) takes pi_old from its own forward: the same loss and gradient
as with the separate old-log-prob pass, the rollout/* drift from that forward, and a refusal where it would not be
on-policy. The driver's choice (config.skips_old_log_probs) is checked here too; the e2e runs check the timing key."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from longrl.config import load_config, skips_old_log_probs
from longrl.protocol import Batch
from longrl.trainer.ray_trainer import rollout_drift_metrics

TEMPERATURE = 0.9


def _batch() -> Batch:
    """6 rows: prompts of 4..9 tokens, responses of 5, 2, 6, 3, 6, 1 tokens, advantages of both signs, and
    engine log-probs a little off the trainer's (drift to report)."""
    g = torch.Generator().manual_seed(0)
    lengths = [5, 2, 6, 3, 6, 1]
    mask = (torch.arange(6) < torch.tensor(lengths)[:, None]).long()
    prompts = [torch.randint(3, 500, (n,), generator=g).tolist() for n in (4, 9, 6, 5, 8, 7)]
    batch = Batch({"responses": torch.randint(3, 500, mask.shape, generator=g) * mask, "response_mask": mask,
                   "advantages": torch.tensor([1.0, -0.5, 0.75, -1.25, 0.3, 2.0])[:, None] * mask},
                  {"prompt_ids": prompts})
    return batch


def _actor(tiny_qwen2: Path, loss_avg_mode: str = "token", global_batch_size: int = 6):
    from longrl.models.adapter import adapter_for
    from longrl.workers.actor import Actor

    cfg = load_config([f"worker.actor.model.model_path={tiny_qwen2}", "algorithm.disable_kl=true",
                       "algorithm.use_kl_loss=false"])
    actor_cfg = dataclasses.replace(cfg.worker.actor, global_batch_size=global_batch_size, loss_avg_mode=loss_avg_mode,
                                    micro_batch_size_per_device_for_update=4)
    adapter = adapter_for("qwen2")
    model = adapter.load(str(tiny_qwen2), torch.float32)
    return Actor(model, adapter, actor_cfg, cfg.algorithm, 0, 1, 10, responses_per_prompt=1)


def _gradients(actor, batch: Batch) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
    """The gradient the optimizer would step with (the step itself is skipped), and the update's metrics."""
    grads: dict[str, torch.Tensor] = {}

    def capture() -> None:
        grads.update({n: p.grad.detach().clone() for n, p in actor.model.named_parameters() if p.grad is not None})

    actor.optimizer.step = capture
    return grads, actor.update(batch, TEMPERATURE)


@pytest.mark.parametrize("loss_avg_mode", ["token", "seq"])
def test_on_policy_update_matches_the_update_after_an_old_log_prob_pass(tiny_qwen2, loss_avg_mode):
    actor = _actor(tiny_qwen2, loss_avg_mode)
    batch = _batch()
    old = actor.log_probs(batch, TEMPERATURE)
    batch["rollout_log_probs"] = (old + 0.01 * torch.cos(torch.arange(old.numel()).reshape(old.shape))) * \
        batch["response_mask"]
    with_pass = batch.union(Batch({"old_log_probs": old}))
    grads_pass, stats_pass = _gradients(actor, with_pass)
    grads_own, stats_own = _gradients(actor, batch)
    assert grads_own.keys() == grads_pass.keys() and len(grads_own) > 0
    for name, g in grads_pass.items():  # train-mode vs eval-mode forwards of fp32 weights: rounding apart only
        torch.testing.assert_close(grads_own[name], g, rtol=1e-4, atol=1e-6, msg=name)
    assert stats_own["actor/pg_loss"] == pytest.approx(stats_pass["actor/pg_loss"], rel=1e-5, abs=1e-7)
    assert stats_own["actor/grad_norm"] == pytest.approx(stats_pass["actor/grad_norm"], rel=1e-5)
    assert stats_own["actor/ppo_kl"] == 0.0 and stats_own["actor/pg_clipfrac"] == 0.0
    # the drift now comes from the update's forward: what the driver computed from the pass, to rounding
    assert "rollout/log_prob_diff_mean" not in stats_pass
    expected = rollout_drift_metrics(with_pass)
    assert expected["rollout/log_prob_diff_mean"] > 1e-3
    for key, value in expected.items():
        assert stats_own[key] == pytest.approx(value, rel=1e-4), key


def test_an_update_of_several_mini_batches_without_old_log_probs_is_refused(tiny_qwen2):
    actor = _actor(tiny_qwen2, global_batch_size=3)  # two mini-batches: the second one's policy has moved
    with pytest.raises(ValueError, match="no old_log_probs.*more than one optimizer step"):
        actor.update(_batch(), TEMPERATURE)


@pytest.mark.parametrize("overrides, skips", [
    ([], True),  # 8 prompts x 5 = 40 responses in one mini-batch of 8 prompts, one epoch, KL as a loss
    (["worker.actor.global_batch_size=4"], False),  # two optimizer steps
    (["worker.actor.ppo_epochs=2"], False),
    (["algorithm.use_kl_loss=false"], False),  # the in-reward KL reads pi_old before the update
    (["algorithm.use_kl_loss=false", "algorithm.disable_kl=true"], True),
])
def test_the_old_log_prob_pass_is_skipped_only_for_an_on_policy_update(overrides, skips):
    cfg = load_config(["data.rollout_batch_size=8", "worker.rollout.n=5", "worker.actor.global_batch_size=8",
                       *overrides])
    assert skips_old_log_probs(cfg) is skips
