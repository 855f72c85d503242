import pytest

from longrl.config import ConfigError, load_config
from longrl.validation import validate


def valid_args(tmp_path) -> list[str]:
    (tmp_path / "model").mkdir(parents=True)
    return ["config=configs/config.yaml", f"worker.actor.model.model_path={tmp_path / 'model'}",
            "data.train_files=x.jsonl"]


def test_defaults_file_overrides_and_types():
    cfg = load_config(["config=configs/cpu_math.yaml", "worker.actor.optim.lr=1e-5", "trainer.logger=[console]",
                       "worker.rollout.n=8", "algorithm.online_filtering=true"])
    assert cfg.worker.actor.optim.lr == 1e-5 and cfg.trainer.logger == ["console"]
    assert cfg.worker.rollout.n == 8 and cfg.algorithm.online_filtering is True
    assert cfg.worker.actor.model.model_path == "assets/tiny-qwen2"  # from the yaml
    assert cfg.worker.actor.optim.weight_decay == 1e-2  # untouched default of a partly given section


def test_typo_names_the_closest_key():
    with pytest.raises(ConfigError, match="did you mean 'worker.actor.global_batch_size'"):
        load_config(["worker.actor.globel_batch_size=4"])


def test_wrong_type_and_bad_choice_name_the_key():
    with pytest.raises(ConfigError, match="worker.rollout.n='many' must be an integer"):
        load_config(["worker.rollout.n=many"])
    with pytest.raises(ConfigError, match=r"worker.actor.loss_avg_mode='avg' is not allowed; choose from \['token', 'seq', 'seq-mean-token-sum-norm'\]"):
        load_config(["worker.actor.loss_avg_mode=avg"])


def test_missing_config_file_is_named():
    with pytest.raises(ConfigError, match="nope.yaml"):
        load_config(["config=nope.yaml"])


def test_grpo_with_one_sample_per_prompt_is_refused(tmp_path):
    cfg = load_config(valid_args(tmp_path) + ["worker.rollout.n=1", "worker.actor.global_batch_size=8"])
    with pytest.raises(ConfigError, match="worker.rollout.n=1: grpo .* set worker.rollout.n>=2"):
        validate(cfg)


def test_batch_not_divisible_by_world_is_refused(tmp_path):
    cfg = load_config(valid_args(tmp_path) + ["data.rollout_batch_size=3", "trainer.n_gpus_per_node=2"])
    with pytest.raises(ConfigError, match="data.rollout_batch_size=3 must be divisible by the data-parallel size 2"):
        validate(cfg)


def test_response_length_over_the_model_limit_is_refused(tmp_path):
    cfg = load_config(valid_args(tmp_path) + ["data.max_prompt_length=1000", "data.max_response_length=2000"])
    with pytest.raises(ConfigError, match="exceeds the model's limit max_position_embeddings=2048"):
        validate(cfg, model_max_positions=2048)


def test_every_problem_is_listed_at_once(tmp_path):
    cfg = load_config(valid_args(tmp_path) + ["worker.rollout.n=1", "algorithm.adv_estimator=nope",
                                              "worker.actor.ulysses_size=3"])
    with pytest.raises(ConfigError) as err:
        validate(cfg)
    text = str(err.value)
    assert "adv_estimator='nope' is unknown" in text and "ulysses_size=3" in text


def test_default_config_validates(tmp_path):
    validate(load_config(valid_args(tmp_path)))


def test_configs_config_yaml_is_exactly_the_full_default():
    from longrl.config import Config

    assert load_config(["config=configs/config.yaml"]) == Config()


def test_full_kl_in_the_reward_is_refused_with_the_reason(tmp_path):
    cfg = load_config(valid_args(tmp_path) + ["algorithm.kl_penalty=full", "algorithm.use_kl_loss=false"])
    with pytest.raises(ConfigError, match="kl_penalty='full' .* set use_kl_loss=true and ulysses_size=1"):
        validate(cfg)


def test_null_is_null_and_the_default_save_path_is_checkpoints_project_experiment():
    from pathlib import Path

    from longrl.config import checkpoint_dir

    cfg = load_config(["trainer.save_checkpoint_path=null", "trainer.project_name=p", "trainer.experiment_name=e"])
    assert cfg.trainer.save_checkpoint_path is None
    assert checkpoint_dir(cfg.trainer) == Path("checkpoints/p/e")
    assert checkpoint_dir(load_config(["trainer.save_checkpoint_path=runs/x"]).trainer) == Path("runs/x")


def test_null_for_a_key_that_needs_a_value_is_an_error_not_the_string_none():
    with pytest.raises(ConfigError, match="trainer.project_name=null is not allowed"):
        load_config(["trainer.project_name=null"])


def test_yaml_null_save_path_as_in_the_seed_configs(tmp_path):
    (tmp_path / "c.yaml").write_text("trainer:\n  save_checkpoint_path: null\n  load_checkpoint_path: null\n")
    cfg = load_config([f"config={tmp_path / 'c.yaml'}"])
    assert cfg.trainer.save_checkpoint_path is None and cfg.trainer.load_checkpoint_path is None


def test_interpolation_reaches_defaults_and_other_overrides():
    cfg = load_config(["data.train_files=a.jsonl", "data.val_files=${data.train_files}",
                       "trainer.experiment_name=run_${data.max_response_length}"])
    assert cfg.data.val_files == "a.jsonl" and cfg.trainer.experiment_name == "run_512"


def test_a_bad_interpolation_names_the_key():
    with pytest.raises(ConfigError, match="trainer.experiment_name"):
        load_config(["trainer.experiment_name=${data.nope}"])


def test_empty_override_is_the_empty_string_and_later_layers_win(tmp_path):
    (tmp_path / "c.yaml").write_text("data:\n  val_files: v.jsonl\n  max_prompt_length: 100\n")
    cfg = load_config([f"config={tmp_path / 'c.yaml'}", "data.val_files=", "data.max_prompt_length=200"])
    assert cfg.data.val_files == "" and cfg.data.max_prompt_length == 200


def test_configs_config_yaml_lists_every_key():
    import yaml

    from longrl.config import Config, _all_keys

    def keys(tree: dict, prefix: str = "") -> set[str]:
        out = set()
        for k, v in tree.items():
            out.add(prefix + k)
            if isinstance(v, dict) and not k.endswith(("val_override_config", "reward_function_kwargs")):
                out |= keys(v, prefix + k + ".")
        return out

    with open("configs/config.yaml") as f:
        assert keys(yaml.safe_load(f)) == set(_all_keys(Config))


def test_min_lr_ratio_without_a_cosine_schedule_is_refused(tmp_path):
    cfg = load_config(valid_args(tmp_path) + ["worker.actor.optim.min_lr_ratio=0.1"])
    with pytest.raises(ConfigError, match="min_lr_ratio=0.1 has no effect with lr_scheduler_type=constant"):
        validate(cfg)


@pytest.mark.parametrize(("arg", "feature"), [
    ("worker.rollout.kl_reward=0.0", "diffusion RL"),
    ("data.diffusion=true", "diffusion RL"),
    ("worker.actor.fsdp.use_orig_params=true", "diffusion RL"),
])
def test_keys_of_features_not_built_yet_name_the_feature(arg, feature):
    with pytest.raises(ConfigError, match=f"belongs to {feature}.*which longrl does not implement yet"):
        load_config([arg])


def test_an_optional_logger_whose_package_is_missing_is_named_before_any_worker(tmp_path, monkeypatch):
    import importlib.util

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mlflow" else real_find_spec(name, *a))
    cfg = load_config(valid_args(tmp_path) + ["trainer.logger=[console,mlflow]"])
    with pytest.raises(ConfigError, match=r"trainer.logger includes 'mlflow' but the mlflow package is not installed; "
                                          r"`pip install mlflow`"):
        validate(cfg)
    cfg = load_config(valid_args(tmp_path / "other") + ["trainer.logger=[console,neptune]"])
    with pytest.raises(ConfigError, match=r"unknown entries \['neptune'\]; choose from .*'mlflow'.*'swanlab'"):
        validate(cfg)


def test_a_value_of_a_feature_not_built_yet_names_the_feature(monkeypatch):
    import longrl.config as config

    monkeypatch.setitem(config.NOT_YET_BUILT_VALUES, ("algorithm.kl_penalty", "k4"), "a future KL")
    with pytest.raises(ConfigError, match="algorithm.kl_penalty='k4' belongs to a future KL"):
        load_config(["algorithm.kl_penalty=k4"])


def test_the_diffusion_keys_of_long_rl_load():
    cfg = load_config(["algorithm.kl_penalty=flow_grpo", "worker.rollout.num_steps=4", "worker.rollout.resolution=64",
                       "worker.rollout.sde_window_range=[0,2]", "worker.rollout.guidance_scale=1.0"])
    assert (cfg.algorithm.kl_penalty, cfg.worker.rollout.num_steps, cfg.worker.rollout.resolution) == ("flow_grpo", 4, 64)
    assert cfg.worker.rollout.sde_window_range == (0, 2)


def schema_leaves(cls: type, prefix: str = "") -> dict[str, object]:
    """Every leaf key of the schema with its annotation."""
    import dataclasses
    import typing

    hints = typing.get_type_hints(cls)
    out: dict[str, object] = {}
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(hints[f.name]):
            out.update(schema_leaves(hints[f.name], f"{prefix}{f.name}."))
        else:
            out[prefix + f.name] = hints[f.name]
    return out


def test_every_key_of_the_schema_is_read_by_something():
    """A leaf's name must be read as an attribute (not a method call) somewhere in longrl/ (the schema's own
    dataclasses read none; the config package's derived sizes, e.g. checkpoint_dir, count); a one-choice Literal (worker.actor.strategy) is honoured by loading alone. By name: a key shared by
    several sections (worker.actor.model.x and worker.critic.model.x) is covered once any of them is read, which
    is why validate refuses the critic's keys it cannot honour (tests/test_validation.py)."""
    import ast
    import typing
    from pathlib import Path

    from longrl.config import Config

    package = Path(__file__).resolve().parents[1] / "longrl"
    reads: set[str] = set()
    for path in package.rglob("*.py"):
        tree = ast.parse(path.read_text())
        called = {id(node.func) for node in ast.walk(tree) if isinstance(node, ast.Call)}
        reads |= {node.attr for node in ast.walk(tree)
                  if isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Load) and id(node) not in called}
    unread = [key for key, annotation in schema_leaves(Config).items()
              if key.rsplit(".", 1)[-1] not in reads
              and not (typing.get_origin(annotation) is typing.Literal and len(typing.get_args(annotation)) == 1)]
    assert unread == []
