"""load_reward_function: `path/to/file.py:function` specs and the errors for bad ones."""

from pathlib import Path

import pytest

from longrl.config import ConfigError
from longrl.rewards import load_reward_function


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_loads_function_from_file_path(tmp_path):
    path = write(tmp_path, "constant.py", "def score(x):\n    return {'overall': 2.0}\n")
    fn = load_reward_function(f"{path}:score")
    assert fn({}) == {"overall": 2.0}


def test_file_named_math_does_not_shadow_stdlib_math(tmp_path):
    path = write(tmp_path, "math.py", "import math\ndef score(x):\n    return {'overall': math.sqrt(4.0)}\n")
    assert load_reward_function(f"{path}:score")({}) == {"overall": 2.0}


def test_builtin_spec_relative_to_repo_root_loads_from_other_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    fn = load_reward_function("examples/reward_function/math.py:compute_score")
    assert fn.__name__ == "compute_score"


def test_spec_without_colon_is_rejected_with_the_expected_form():
    with pytest.raises(ConfigError, match=r"worker.reward.reward_function='rewards.py'.*'path/to/file.py:function'"):
        load_reward_function("rewards.py")


def test_missing_file_error_names_the_file(tmp_path):
    missing = tmp_path / "nowhere.py"
    with pytest.raises(FileNotFoundError, match="nowhere.py"):
        load_reward_function(f"{missing}:score")


def test_missing_function_error_names_function_and_lists_defined_ones(tmp_path):
    path = write(tmp_path, "two.py", "def alpha(x):\n    return {}\ndef beta(x):\n    return {}\n")
    with pytest.raises(ConfigError, match=r"has no function 'gamma'; it defines \['alpha', 'beta'\]"):
        load_reward_function(f"{path}:gamma")


def test_non_callable_attribute_is_rejected(tmp_path):
    path = write(tmp_path, "value.py", "score = 3\n")
    with pytest.raises(ConfigError, match="'score' .* is a int, not a function"):
        load_reward_function(f"{path}:score")


def test_file_that_fails_to_import_names_the_file_and_the_exception(tmp_path):
    path = write(tmp_path, "broken.py", "raise ImportError('no such dependency')\n")
    with pytest.raises(ConfigError, match=r"importing .*broken.py failed with ImportError: no such dependency"):
        load_reward_function(f"{path}:score")
