"""Bad input of a diffusion run is a named error before any worker starts (or a logged, counted skip)."""

import logging

import pytest
import torch

from longrl.config import ConfigError, DataConfig, RewardConfig
from longrl.data.prompts import load_prompts
from longrl.protocol import Batch
from longrl.rewards import RewardError, score_responses
from longrl.trainer.kinds import DiffusionKind
from longrl.trainer.preflight import checked_config


def sd3_args(tiny_sd3, prompt_file, *overrides):
    return ["config=configs/cpu_sd3.yaml", f"worker.actor.model.model_path={tiny_sd3}",
            f"data.train_files={prompt_file}", *overrides]


def test_the_cpu_sd3_config_passes_the_preflight(tiny_sd3, prompt_file):
    cfg = checked_config(sd3_args(tiny_sd3, prompt_file))
    assert cfg.algorithm.kl_penalty == "flow_grpo"


def test_a_resolution_the_vae_and_patch_do_not_divide_is_named(tiny_sd3, prompt_file):
    # tiny SD3: VAE factor 8 x patch 2 = 16 pixels
    with pytest.raises(ConfigError, match=r"worker.rollout.resolution: 40x40 pixels must be positive multiples of 16 "
                                          r"\(the VAE factor 8 times the transformer's patch 2\)"):
        checked_config(sd3_args(tiny_sd3, prompt_file, "worker.rollout.resolution=40"))


def test_num_frames_not_of_the_form_4k_plus_1_is_named(tiny_wan, prompt_file):
    with pytest.raises(ConfigError, match=r"worker.rollout.num_frames=8 must be of the form 4k\+1 .* e.g. 9"):
        checked_config(sd3_args(tiny_wan, prompt_file, "worker.rollout.num_frames=8", "worker.rollout.resolution=16"))


def test_loop_features_without_a_diffusion_counterpart_are_named(tiny_sd3, prompt_file):
    with pytest.raises(ConfigError) as error:
        checked_config(sd3_args(tiny_sd3, prompt_file, "algorithm.adv_estimator=gae", "algorithm.online_filtering=true",
                                "worker.rollout.sde_window_size=10", "algorithm.use_kl_loss=false"))
    for expected in ("algorithm.adv_estimator='gae' needs a critic", "algorithm.online_filtering=true: a diffusion "
                     "sample's latents stay on the rank that sampled it", "sde_window_size=10 must be in [1, num_steps=10)",
                     "algorithm.kl_penalty='flow_grpo' compares the step means"):
        assert expected in str(error.value)


def test_samples_that_do_not_divide_by_the_ranks_pass_for_diffusion_but_prompts_still_must_for_language(
        tiny_sd3, tiny_qwen2, prompt_file):
    # Long-RL's diffusion scripts: 2 prompts x 5 images on 8 ranks, one prompt's 5 images per optimizer step
    long_rl = ("trainer.n_gpus_per_node=8", "data.rollout_batch_size=2", "worker.rollout.n=5",
               "worker.actor.global_batch_size=1", "worker.actor.micro_batch_size_per_device_for_update=1")
    cfg = checked_config(sd3_args(tiny_sd3, prompt_file, *long_rl))
    assert cfg.data.rollout_batch_size == 2 and cfg.worker.actor.global_batch_size == 1
    with pytest.raises(ConfigError) as error:  # a language model samples a prompt's n responses on one rank
        checked_config(["config=configs/cpu_math.yaml", f"worker.actor.model.model_path={tiny_qwen2}", *long_rl])
    assert "data.rollout_batch_size=2 must be divisible by the data-parallel size 8" in str(error.value)
    assert "1 x 5 = 5 responses per optimizer step must be divisible by the data-parallel size 8" in str(error.value)


def test_an_empty_prompt_and_a_bad_jsonl_line_are_named_by_file_and_line(tmp_path, caplog):
    txt = tmp_path / "p.txt"
    txt.write_text("a red cat\n   \na blue dog\n")
    with pytest.raises(ConfigError, match=rf"line 2 of {txt}: an empty prompt \(data.prompt_key='prompt'\)"):
        load_prompts(str(txt), DataConfig(prompt_key="prompt", strict=True))
    with caplog.at_level(logging.WARNING):
        rows = load_prompts(str(txt), DataConfig(prompt_key="prompt"))
    assert [r["prompt"] for r in rows] == ["a red cat", "a blue dog"] and "skipping line 2" in caplog.text
    jsonl = tmp_path / "p.jsonl"
    jsonl.write_text('{"prompt": "a red cat", "tag": "x"}\n{"prompt": \n{"text": "no prompt"}\n')
    with pytest.raises(ConfigError, match=rf"line 2 of {jsonl}: not a JSON object"):
        load_prompts(str(jsonl), DataConfig(prompt_key="prompt", strict=True))
    rows = load_prompts(str(jsonl), DataConfig(prompt_key="prompt"))
    assert rows == [{"prompt": "a red cat", "metadata": {"tag": "x"}, "row": 0}]


def reward_inputs() -> list[dict]:
    kind = DiffusionKind.__new__(DiffusionKind)  # only its reward_inputs: no data files needed
    batch = Batch({"decoded": torch.zeros(2, 3, 8, 8, dtype=torch.uint8)},
                  {"prompt": ["a", "b"], "metadata": [{}, {"answer": "x"}]})
    return kind.reward_inputs(batch)


def test_the_reward_gets_pil_images_with_the_prompt_and_metadata():
    first, second = reward_inputs()
    assert first["image"].size == (8, 8) and first["prompt"] == "a" and second["ground_truth"] == "x"


@pytest.mark.parametrize(("body", "message"), [
    ("return [{'overall': float('nan')} for _ in inputs]", "overall=nan for sample 0"),
    ("return [{'overall': 1.0}]", "returned a list of length 1 for 2 samples"),
])
def test_a_reward_returning_nan_or_the_wrong_shape_is_named(tmp_path, body, message):
    path = tmp_path / "bad_reward.py"
    path.write_text(f"def score(inputs):\n    {body}\n")
    with pytest.raises(RewardError, match=message):
        score_responses(RewardConfig(reward_function=f"{path}:score"), reward_inputs())


def test_the_flow_grpo_kl_on_a_language_model_is_named(tiny_qwen2, prompt_file):
    with pytest.raises(ConfigError, match="kl_penalty='flow_grpo' reads the denoising steps of a diffusion model"):
        checked_config(["config=configs/cpu_math.yaml", f"worker.actor.model.model_path={tiny_qwen2}",
                        "algorithm.kl_penalty=flow_grpo"])


def test_the_cpu_wan_config_passes_the_preflight(tiny_wan):
    cfg = checked_config(["config=configs/cpu_wan.yaml", f"worker.actor.model.model_path={tiny_wan}"])
    assert (cfg.worker.rollout.num_frames, cfg.worker.rollout.resolution) == (9, 16)


def test_a_negative_lora_rank_is_named(tiny_sd3, prompt_file):
    with pytest.raises(ConfigError, match=r"worker.actor.model.lora.rank=-1 must be >= 0"):
        checked_config(sd3_args(tiny_sd3, prompt_file, "worker.actor.model.lora.rank=-1"))
