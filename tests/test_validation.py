"""`validate`: what the selected algorithms declare they need, keys refused instead of ignored, batch sizes
of every trained role, and validation sampling, all checked before any worker starts."""

from __future__ import annotations

import pytest

from longrl.config import ConfigError, load_config, update_responses
from longrl.validation import validate


def config(tmp_path, *overrides: str):
    (tmp_path / "model").mkdir(exist_ok=True)
    return load_config(["config=configs/config.yaml", f"worker.actor.model.model_path={tmp_path / 'model'}",
                        "data.train_files=x.jsonl", *overrides])


def problems(cfg) -> str:
    with pytest.raises(ConfigError) as err:
        validate(cfg)
    return str(err.value)


# ---- declared requirements -------------------------------------------------------------------------
def test_gspo_with_token_averaging_and_ppo_clip_ratios_is_refused_with_the_reason(tmp_path):
    text = problems(config(tmp_path, "worker.actor.loss_type=gspo"))
    assert "worker.actor.loss_type='gspo' is exact only with worker.actor.loss_avg_mode='seq', not 'token'" in text
    assert "needs clip ratios <= 0.01, but worker.actor.clip_ratio_low=0.2 and clip_ratio_high=0.3" in text
    assert "the paper clips at 3e-4/4e-4" in text


def test_gspo_as_its_paper_sets_it_validates(tmp_path):
    validate(config(tmp_path, "worker.actor.loss_type=gspo", "worker.actor.loss_avg_mode=seq",
                    "worker.actor.clip_ratio_low=3e-4", "worker.actor.clip_ratio_high=4e-4"))


def test_remax_with_online_filtering_is_refused_before_it_would_fail_at_the_first_advantage(tmp_path):
    text = problems(config(tmp_path, "algorithm.adv_estimator=remax", "algorithm.online_filtering=true"))
    assert "algorithm.adv_estimator='remax' needs the score of a greedy response" in text


def test_dr_grpo_validates(tmp_path):
    validate(config(tmp_path, "algorithm.norm_adv_by_std=false", "worker.actor.loss_avg_mode=seq-mean-token-sum-norm"))


# ---- one log-prob definition ---------------------------------------------------------------------
@pytest.mark.parametrize("sampling", ["worker.rollout.top_p=0.9", "worker.rollout.top_k=20"])
def test_truncated_importance_sampling_with_truncated_sampling_is_refused_with_the_reason(tmp_path, sampling):
    text = problems(config(tmp_path, "worker.actor.tis_cap=2.0", sampling))
    assert "worker.actor.tis_cap=2.0 weighs each token by pi_old / pi_rollout" in text
    assert "renormalised over the kept tokens" in text and "set top_p=1.0 and top_k=-1, or tis_cap=null" in text


def test_truncated_importance_sampling_with_full_sampling_validates(tmp_path):
    validate(config(tmp_path, "worker.actor.tis_cap=2.0"))


# ---- keys refused instead of ignored -------------------------------------------------------------
def test_easyr1s_optimizer_and_loading_keys_validate(tmp_path):
    # implemented: adamw_bf16 in longrl/workers/optim.py, rank 0 init in longrl/parallel/rank0_init.py
    validate(config(tmp_path, "worker.actor.optim.strategy=adamw_bf16", "worker.actor.fsdp.enable_rank0_init=true",
                    "worker.ref.fsdp.enable_rank0_init=true"))


def test_critic_keys_it_cannot_honour_are_refused_when_a_critic_is_trained(tmp_path):
    text = problems(config(tmp_path, "algorithm.adv_estimator=gae", "worker.critic.model.tokenizer_path=/other",
                           "worker.critic.model.freeze_vision_tower=true", "worker.critic.optim.strategy=adamw_bf16",
                           "worker.critic.fsdp.enable_rank0_init=true"))
    assert "worker.critic.model.tokenizer_path='/other': the critic scores the actor's token ids" in text
    assert "worker.critic.model.freeze_vision_tower=true: the critic is a text model" in text
    assert "worker.critic.optim.strategy=adamw_bf16" not in text and "enable_rank0_init" not in text


# ---- checks that used to come late ----------------------------------------------------------------
def test_a_typo_in_val_override_config_is_refused_before_training(tmp_path):
    text = problems(config(tmp_path, "worker.rollout.val_override_config={temprature: 0.0, n: 1}"))
    assert ("worker.rollout.val_override_config has unknown entries ['temprature'] (did you mean 'temperature'?); "
            "it may set ['n', 'temperature', 'top_p', 'top_k', 'ignore_eos']") in text


def test_a_bad_value_in_val_override_config_is_refused_before_training(tmp_path):
    assert "worker.rollout.val_override_config.n='one' must be an integer" in problems(
        config(tmp_path, "worker.rollout.val_override_config={n: one}"))
    assert "validation needs n >= 1" in problems(config(tmp_path, "worker.rollout.val_override_config={n: 0}"))


def test_critic_batch_sizes_are_checked_when_a_critic_is_trained(tmp_path):
    # 8 prompts x 4 responses = 32 per step; dp = 2
    text = problems(config(tmp_path, "algorithm.adv_estimator=gae", "worker.critic.global_batch_size=3"))
    assert "worker.critic.global_batch_size=3 (prompts per optimizer step) must divide the prompts per step " \
           "data.rollout_batch_size=8" in text
    text = problems(config(tmp_path, "algorithm.adv_estimator=gae", "worker.critic.global_batch_size=2",
                           "worker.critic.micro_batch_size_per_device_for_update=3"))
    assert ("worker.critic.micro_batch_size_per_device_for_update=3 must divide the per-device mini-batch "
            "global_batch_size x worker.rollout.n / dp = 4 responses") in text
    text = problems(config(tmp_path, "algorithm.adv_estimator=gae", "worker.critic.global_batch_size=1",
                           "worker.rollout.n=3"))
    assert "global_batch_size x worker.rollout.n = 1 x 3 = 3 responses per optimizer step must be divisible" in text
    validate(config(tmp_path, "worker.critic.global_batch_size=3"))  # no critic (grpo): its sizes are unread


def test_global_batch_size_counts_prompts_as_in_easyr1(tmp_path):
    # EasyR1's workers multiply global_batch_size by rollout.n: 128 prompts with n=5 are 640 responses per update
    cfg = config(tmp_path, "data.rollout_batch_size=512", "worker.rollout.n=5", "worker.actor.global_batch_size=128",
                 "trainer.n_gpus_per_node=8", "worker.actor.micro_batch_size_per_device_for_update=4")
    validate(cfg)
    assert update_responses(cfg, cfg.worker.actor) == 640


def test_the_divisibility_error_names_mini_rollout_batch_size_when_that_is_the_offending_key(tmp_path):
    text = problems(config(tmp_path, "data.mini_rollout_batch_size=3", "algorithm.online_filtering=true"))
    assert "data.mini_rollout_batch_size=3 must be divisible by the data-parallel size 2" in text
    assert "data.rollout_batch_size=" not in text


def test_mini_rollout_batch_size_without_online_filtering_is_refused_instead_of_shrinking_the_step(tmp_path):
    text = problems(config(tmp_path, "data.mini_rollout_batch_size=4"))
    assert "data.mini_rollout_batch_size=4 sets the prompts of one online-filtering round" in text
    validate(config(tmp_path, "data.mini_rollout_batch_size=4", "algorithm.online_filtering=true"))


def test_a_negative_decode_thread_count_is_refused(tmp_path):
    assert "data.num_workers=-1 must be >= 0" in problems(config(tmp_path, "data.num_workers=-1"))


def test_lora_on_the_critic_and_a_bad_lora_section_are_refused(tmp_path):
    text = problems(config(tmp_path, "worker.critic.model.lora.rank=8", "worker.actor.model.lora.rank=8",
                           "worker.actor.model.lora.exclude_modules=(visual"))
    assert "worker.critic.model.lora.rank=8: LoRA trains the actor only" in text
    assert "worker.actor.model.lora.exclude_modules='(visual' is not a regular expression" in text
    validate(config(tmp_path, "worker.actor.model.lora.rank=8", "worker.actor.model.lora.target_modules=q_proj,v_proj"))
