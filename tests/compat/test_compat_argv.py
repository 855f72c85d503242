"""Every example script of Long-RL and EasyR1, run through `python3 -m longrl.config` (load + validate, no Ray).

A script passes when longrl accepts its command line as it is, or when everything it refuses belongs to a
feature longrl names as not implemented yet. Data: argv_data.py. All scripts are checked in one subprocess
(check_argv.py), which also looks past the first error, so each test reports every problem of its script.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.compat.argv_data import CONFIGS, SCRIPTS, Script

REPO = Path(__file__).resolve().parents[2]
NOT_YET_BUILT = "which longrl does not implement yet"
# An optional logger (swanlab, mlflow) that is not installed here is refused with its install command: the
# script itself is accepted, the machine lacks a package that a user installs with pip.
MISSING_OPTIONAL_PACKAGE = "package is not installed; `pip install"


def _problems(error: str) -> list[str]:
    """One error of the checker as its problems (validate lists several under 'invalid configuration:')."""
    if error.startswith("invalid configuration:"):
        return [line.removeprefix("  - ") for line in error.splitlines()[1:]]
    return [error]


# Families without a tiny builder in longrl use the closest one that exists; the family test below fails
# for them, so a pass with a stand-in is never mistaken for support of the family.
STAND_IN = {
    "qwen2": "qwen2", "qwen2_5": "qwen2", "qwen3": "qwen3", "diffusion": "sd3",
    "qwen2_5_vl": "qwen2_5_vl", "qwen3_vl": "qwen3_vl", "longvila": "longvila", "nvila": "nvila", "qwen2_5_omni": "qwen2_5_omni",
    "other": "qwen2_5_vl",
}


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory) -> dict[str, Path]:
    """Stand-ins whose head counts and position limit are those of the scripts' 3B-7B models (16 query heads,
    32k positions), so Ulysses sizes up to 8 and 2k+20k-token sequences are judged as on the real models;
    the session's tiny_qwen2 (4 heads, 2k positions) would refuse them for the stand-in's sake."""
    from longrl.diffusion.tiny import build_sd3
    from longrl.models.tiny import build_qwen2, build_qwen3
    from longrl.models.tiny_omni import build_qwen2_5_omni
    from longrl.models.tiny_vila import build_vila
    from longrl.models.tiny_vl import build_qwen2_5_vl, build_qwen3_vl

    root = tmp_path_factory.mktemp("compat_models")
    return {"qwen2": build_qwen2(root / "qwen2", hidden_size=512, max_position_embeddings=32768),
            "qwen3": build_qwen3(root / "qwen3", hidden_size=512, max_position_embeddings=32768),
            "qwen2_5_vl": build_qwen2_5_vl(root / "qwen2_5_vl", hidden_size=512, max_position_embeddings=32768),
            "qwen2_5_omni": build_qwen2_5_omni(root / "qwen2_5_omni", hidden_size=512, max_position_embeddings=32768),
            "qwen3_vl": build_qwen3_vl(root / "qwen3_vl", hidden_size=512, max_position_embeddings=32768),
            "sd3": build_sd3(root / "sd3"),
            # the released geometry (448 px, 32x32 patches): 257 (2x2) and 122 (3x3) tokens per frame, as the
            # scripts' worker.rollout.tokens_per_frame say
            "longvila": build_vila(root / "longvila", "mlp_downsample_2x2_fix", "dev", hidden_size=512,
                                   max_position_embeddings=32768, image_size=448),
            "nvila": build_vila(root / "nvila", "mlp_downsample_3x3_fix", "dev", hidden_size=512,
                                max_position_embeddings=32768, image_size=448)}


def _command_line(script: Script, workdir: Path, models: dict[str, Path], data: dict[str, Path]) -> list[str]:
    """The script's argv with its config file written to `workdir` and the placeholders filled in (by plain
    replacement: some values are JSON, whose braces str.format would take for fields)."""
    config = workdir / Path(script.config).name
    config.write_text(CONFIGS[(script.project, script.config)])
    values = {"{model}": models[STAND_IN[script.family]], "{train}": data["train"], "{val}": data["val"],
              "{video_dir}": workdir}
    argv = [f"config={config}"]
    for arg in script.argv:
        for placeholder, value in values.items():
            arg = arg.replace(placeholder, str(value))
        argv.append(arg)
    return argv


@pytest.fixture(scope="module")
def results(tmp_path_factory, tiny_models, math_data) -> dict[str, dict]:
    """{script name: {"first_rc", "rc", "errors"}} from one run of check_argv.py over every script."""
    root = tmp_path_factory.mktemp("compat_argv")
    cases = []
    for i, script in enumerate(SCRIPTS):
        workdir = root / str(i)
        workdir.mkdir()
        cases.append({"name": script.name, "argv": _command_line(script, workdir, tiny_models, math_data)})
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.run([sys.executable, str(REPO / "tests/compat/check_argv.py")], input=json.dumps(cases),
                          capture_output=True, text=True, cwd=REPO, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout)


def test_every_script_has_a_unique_name_and_a_known_config():
    names = [s.name for s in SCRIPTS]
    assert len(names) == len(set(names))
    assert all((s.project, s.config) in CONFIGS for s in SCRIPTS)
    assert all(s.family in STAND_IN for s in SCRIPTS)


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda s: s.name)
def test_longrl_accepts_the_script_or_names_the_missing_feature(script, results):
    result = results[script.name]
    refused = [p for e in result["errors"] for p in _problems(e)
               if NOT_YET_BUILT not in p and MISSING_OPTIONAL_PACKAGE not in p]
    stand_in = "" if STAND_IN[script.family] == script.family else \
        f" (model: a tiny {STAND_IN[script.family]} standing in for {script.family})"
    assert not refused, (
        f"{script.source}{stand_in} is refused by python3 -m longrl.config:\n  - " + "\n  - ".join(refused))


def _scripts_by_model_type() -> dict[str, list[str]]:
    by_type: dict[str, list[str]] = {}
    for s in SCRIPTS:
        by_type.setdefault(s.model_type, []).append(s.name)
    return by_type


@pytest.mark.parametrize("model_type", sorted(_scripts_by_model_type()))
def test_the_model_type_of_every_script_has_an_adapter_or_is_named_as_not_built_yet(model_type, tmp_path):
    from longrl.trainer.preflight import adapter_problem

    if model_type in ("sd3", "wan"):  # diffusers pipelines: a model_index.json, no config.json
        pipeline = {"sd3": "StableDiffusion3Pipeline", "wan": "WanPipeline"}[model_type]
        (tmp_path / "model_index.json").write_text(json.dumps({"_class_name": pipeline}))
    else:
        (tmp_path / "config.json").write_text(json.dumps({"model_type": model_type}))
    problem = adapter_problem(str(tmp_path))
    assert problem is None or NOT_YET_BUILT in problem, (
        f"{problem}; used by {_scripts_by_model_type()[model_type]}")


def test_the_checker_removes_the_key_an_error_names_from_the_argv_and_the_config_file(tmp_path):
    from tests.compat.check_argv import named_key, without_key

    assert named_key("unknown config key 'trainer.save_model_only'; did you mean 'trainer.val_only'?") == \
        "trainer.save_model_only"
    assert named_key("config key 'worker.vila_model' belongs to VILA/NVILA/LongVILA models, " + NOT_YET_BUILT) == \
        "worker.vila_model"
    assert named_key("worker.actor.loss_type='cispo' is not allowed; choose from ['ppo']") == "worker.actor.loss_type"
    assert named_key("invalid configuration:\n  - worker.rollout.n=1: grpo needs 2") is None
    config = tmp_path / "c.yaml"
    config.write_text("worker:\n  actor:\n    lora:\n      rank: 8\n    ulysses_size: 2\n")
    argv, removed = without_key([f"config={config}", "worker.actor.lora.rank=64", "trainer.nnodes=1"],
                                "worker.actor.lora")
    assert removed and argv == [f"config={config}", "trainer.nnodes=1"]
    assert config.read_text() == "worker:\n  actor:\n    ulysses_size: 2\n"
    assert without_key(["trainer.nnodes=1"], "data.video_fps") == (["trainer.nnodes=1"], False)
