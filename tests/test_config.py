import pytest

from longrl.config import ConfigError, load_config
from longrl.validation import validate


def valid_args(tmp_path) -> list[str]:
    (tmp_path / "model").mkdir()
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
    """A leaf's name must be read as an attribute (not a method call) somewhere in longrl/ outside the schema
    itself; a one-choice Literal (worker.actor.strategy) is honoured by loading alone. By name: a key shared by
    several sections (worker.actor.model.x and worker.critic.model.x) is covered once any of them is read, which
    is why validate refuses the critic's keys it cannot honour (tests/test_validation.py)."""
    import ast
    import typing
    from pathlib import Path

    from longrl.config import Config

    package = Path(__file__).resolve().parents[1] / "longrl"
    reads: set[str] = set()
    for path in package.rglob("*.py"):
        if path.name == "config.py" and path.parent == package:
            continue
        tree = ast.parse(path.read_text())
        called = {id(node.func) for node in ast.walk(tree) if isinstance(node, ast.Call)}
        reads |= {node.attr for node in ast.walk(tree)
                  if isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Load) and id(node) not in called}
    unread = [key for key, annotation in schema_leaves(Config).items()
              if key.rsplit(".", 1)[-1] not in reads
              and not (typing.get_origin(annotation) is typing.Literal and len(typing.get_args(annotation)) == 1)]
    assert unread == []
