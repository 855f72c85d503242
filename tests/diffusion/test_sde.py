"""The Flow-GRPO SDE step against hand-worked values, and the window schedules."""

import math

import pytest
import torch

from longrl.config import ConfigError
from longrl.diffusion.sde import noise_scale, ode_step, sde_step, sde_window

SIGMAS = torch.tensor([1.0, 0.5, 0.0])
LOG_SQRT_2PI = 0.5 * math.log(2 * math.pi)


def test_sde_step_mean_and_log_prob_match_a_hand_worked_case():
    # step 1: sigma = 0.5, dt = -0.5, a = 1 -> s = sqrt(0.5 / 0.5) = 1
    # mean = x (1 + 1 * -0.5 / 1) + v (1 + 1 * 0.5 / 1) * -0.5 = 0.5 x - 0.75 v = 1 - 0.75 = 0.25 for x=2, v=1
    # step std = s sqrt(-dt) = sqrt(0.5); x' = mean + std * 1
    # log p = -1/2 - log(sqrt(0.5)) - log(sqrt(2 pi)) = -0.5 + 0.346574 - 0.918939 = -1.072365
    x, v = torch.full((1, 2), 2.0), torch.full((1, 2), 1.0)
    nxt = torch.full((1, 2), 0.25 + math.sqrt(0.5))
    out = sde_step(x, v, SIGMAS, torch.tensor([1]), noise_level=1.0, next_latents=nxt)
    assert out.mean.flatten().tolist() == pytest.approx([0.25, 0.25], abs=1e-7)
    assert out.log_prob.item() == pytest.approx(-0.5 + 0.5 * math.log(2) - LOG_SQRT_2PI, abs=1e-6)
    assert out.std.item() == pytest.approx(1.0)


def test_the_noise_scale_at_sigma_one_uses_the_second_sigma_instead_of_dividing_by_zero():
    # sigma = 1: s = a sqrt(1 / (1 - sigmas[1])) = sqrt(1 / 0.5) = sqrt(2); finite
    assert noise_scale(SIGMAS, torch.tensor([0]), 1.0).item() == pytest.approx(math.sqrt(2))
    # mean at step 0 (dt = -0.5, s^2 = 2): x (1 + 2 * -0.5 / 2) + v (1 + 0) * -0.5 = 0.5 x - 0.5 v
    out = sde_step(torch.tensor([[2.0]]), torch.tensor([[1.0]]), SIGMAS, torch.tensor([0]), 1.0,
                   next_latents=torch.tensor([[0.5]]))
    assert out.mean.item() == pytest.approx(0.5)
    assert torch.isfinite(out.log_prob).all()


def test_the_log_prob_is_averaged_over_the_latent_dims_and_recomputes_the_sampled_one():
    g = torch.Generator().manual_seed(0)
    x, v = torch.randn(3, 4, 5, 5, generator=g), torch.randn(3, 4, 5, 5, generator=g)
    sampled = sde_step(x, v, SIGMAS, torch.tensor([0, 1, 1]), 0.7, noise=torch.randn(3, 4, 5, 5, generator=g))
    again = sde_step(x, v, SIGMAS, torch.tensor([0, 1, 1]), 0.7, next_latents=sampled.next_latents)
    assert sampled.log_prob.shape == (3,)
    assert torch.equal(sampled.log_prob, again.log_prob)


def test_the_ode_step_is_the_euler_step():
    assert ode_step(torch.tensor([2.0]), torch.tensor([1.0]), SIGMAS, 0).item() == pytest.approx(1.5)


def test_the_full_trajectory_trains_every_step_but_the_last():
    assert sde_window(10, None, None, "random", rl_step=3, seed=1) == list(range(9))


def test_a_random_window_is_drawn_in_its_range_the_same_for_every_caller_of_a_step():
    starts = {sde_window(10, 2, (0, 5), "random", rl_step=s, seed=1)[0] for s in range(1, 60)}
    assert starts == {0, 1, 2, 3, 4}
    assert sde_window(10, 2, (0, 5), "random", 7, 1) == sde_window(10, 2, (0, 5), "random", 7, 1)
    assert len(sde_window(10, 3, None, "random", 1, 1)) == 3


def test_a_sliding_window_moves_one_step_per_rl_step_and_wraps_around():
    # MixGRPO: starts 0, 1, 2, then back to 0 for the range [0, 3)
    assert [sde_window(6, 2, (0, 3), "sliding", s, 1)[0] for s in range(1, 7)] == [0, 1, 2, 0, 1, 2]


def test_a_window_that_does_not_fit_names_the_keys():
    with pytest.raises(ConfigError, match=r"sde_window_range=\[0, 9\] with sde_window_size=3 must fit in num_steps=10"):
        sde_window(10, 3, (0, 9), "random", 1, 1)
