"""score_responses: calling batch and sequential functions, and checking what they return."""

import pickle
import time
from pathlib import Path

import pytest

from longrl.config import RewardConfig
from longrl.rewards import RewardError, score_responses

INPUTS = [
    {"response": "<think>3 plus 4</think> \\boxed{7}", "response_length": 9, "ground_truth": "7"},
    {"response": "<think>hm</think> \\boxed{8}", "response_length": 7, "ground_truth": "7"},
    {"response": "7", "response_length": 1, "ground_truth": "7"},
]


def reward_file(tmp_path: Path, body: str, name: str = "user_reward.py") -> str:
    path = tmp_path / name
    path.write_text(body)
    return str(path)


def test_batch_and_sequential_give_the_same_scores_for_the_builtin_math_reward():
    spec = "examples/reward_function/math.py:compute_score"
    batch = score_responses(RewardConfig(reward_type="batch", reward_function=spec), INPUTS)
    sequential = score_responses(RewardConfig(reward_type="sequential", reward_function=spec), INPUTS)
    # sample 0: format 1, accuracy 1 -> 0.9*1 + 0.1*1 = 1.0; sample 1: 0.9*0 + 0.1*1 = 0.1;
    # sample 2: no think/boxed -> 0.0
    assert [s["overall"] for s in batch] == pytest.approx([1.0, 0.1, 0.0], abs=1e-12)
    assert batch == sequential


def test_kwargs_are_passed_to_the_function():
    cfg = RewardConfig(reward_function="examples/reward_function/math.py:compute_score",
                       reward_function_kwargs={"format_weight": 0.5})
    # sample 1: format 1, accuracy 0 -> 0.5*0 + 0.5*1 = 0.5
    assert score_responses(cfg, INPUTS)[1]["overall"] == pytest.approx(0.5, abs=1e-12)


def test_max_response_length_is_passed_only_to_functions_that_take_it(tmp_path):
    spec = reward_file(tmp_path, "def score(xs, max_response_length):\n"
                                 "    return [{'overall': float(max_response_length)} for _ in xs]\n"
                                 "def plain(xs):\n    return [{'overall': 1.0} for _ in xs]\n")
    assert score_responses(RewardConfig(reward_function=f"{spec}:score"), INPUTS[:1], 64) == [{"overall": 64.0}]
    assert score_responses(RewardConfig(reward_function=f"{spec}:plain"), INPUTS[:1], 64) == [{"overall": 1.0}]


def test_kwargs_max_response_length_wins_over_the_trainer_value(tmp_path):
    spec = reward_file(tmp_path, "def score(xs, max_response_length):\n"
                                 "    return [{'overall': float(max_response_length)} for _ in xs]\n")
    cfg = RewardConfig(reward_function=f"{spec}:score", reward_function_kwargs={"max_response_length": 8})
    assert score_responses(cfg, INPUTS[:1], 64) == [{"overall": 8.0}]


def test_sequential_function_that_raises_names_the_spec_the_sample_and_its_ground_truth(tmp_path):
    spec = reward_file(tmp_path, "def score(x):\n"
                                 "    if x['response'] == '7':\n        raise ValueError('cannot parse')\n"
                                 "    return {'overall': 1.0}\n") + ":score"
    with pytest.raises(RewardError, match=r"user_reward.py:score.*sample 2 \(ground_truth='7'\).*cannot parse"):
        score_responses(RewardConfig(reward_type="sequential", reward_function=spec), INPUTS)


def test_batch_function_that_raises_is_rerun_per_sample_to_name_the_culprit(tmp_path):
    spec = reward_file(tmp_path, "def score(xs):\n"
                                 "    if any(x['response_length'] == 7 for x in xs):\n"
                                 "        raise KeyError('length seven')\n"
                                 "    return [{'overall': 1.0} for _ in xs]\n") + ":score"
    with pytest.raises(RewardError, match=r"sample 1 \(ground_truth='7'\): KeyError"):
        score_responses(RewardConfig(reward_function=spec), INPUTS)


def test_batch_function_that_only_fails_on_the_whole_batch_names_the_batch(tmp_path):
    spec = reward_file(tmp_path, "def score(xs):\n"
                                 "    if len(xs) > 1:\n        raise RuntimeError('batch too big')\n"
                                 "    return [{'overall': 1.0}]\n") + ":score"
    with pytest.raises(RewardError, match="the batch of 3 samples: RuntimeError: batch too big"):
        score_responses(RewardConfig(reward_function=spec), INPUTS)


def test_batch_function_used_as_sequential_hints_at_reward_type(tmp_path):
    spec = reward_file(tmp_path, "def score(xs):\n    return [{'overall': 1.0} for x in xs[::1]]\n") + ":score"
    with pytest.raises(RewardError, match="check that reward_type matches its signature"):
        score_responses(RewardConfig(reward_type="sequential", reward_function=spec), INPUTS)


@pytest.mark.parametrize("body, message", [
    ("return [{'overall': 1.0}]", r"returned a list of length 1 for 3 samples"),
    ("return {'overall': 1.0}", r"returned a dict for 3 samples"),
    ("return [{'accuracy': 1.0} for _ in xs]", r"for sample 0 .*at least the key 'overall'"),
    ("return [{'overall': float('nan')} for _ in xs]", r"overall=nan for sample 0 .*finite number"),
    ("return [{'overall': 1.0, 'note': 'ok'} for _ in xs]", r"note='ok' for sample 0 .*finite number"),
    ("return [{'overall': 1.0 if i != 2 else float('inf')} for i, _ in enumerate(xs)]",
     r"overall=inf for sample 2 \(ground_truth='7'\).*finite number"),
    ("return [{'overall': 1.0, 'accuracy': 1.0} if i != 1 else {'overall': 1.0} for i, _ in enumerate(xs)]",
     r"returned the keys \['overall'\] for sample 1 \(ground_truth='7'\) but \['accuracy', 'overall'\] "
     r"for sample 0; every sample must get the same keys"),
])
def test_malformed_results_are_rejected(tmp_path, body, message):
    spec = reward_file(tmp_path, f"def score(xs):\n    {body}\n") + ":score"
    with pytest.raises(RewardError, match=message):
        score_responses(RewardConfig(reward_function=spec), INPUTS)


def test_scores_are_plain_floats(tmp_path):
    spec = reward_file(tmp_path, "def score(xs):\n    return [{'overall': True, 'n': 3} for _ in xs]\n") + ":score"
    scores = score_responses(RewardConfig(reward_function=spec), INPUTS[:1])
    assert scores == [{"overall": 1.0, "n": 3.0}]
    assert all(type(v) is float for v in scores[0].values())


def test_empty_input_gives_empty_scores_without_loading_the_function():
    assert score_responses(RewardConfig(reward_function="does/not/exist.py:f"), []) == []


def test_score_responses_and_its_error_survive_pickling_for_ray_tasks():
    assert pickle.loads(pickle.dumps(score_responses)) is score_responses
    error = pickle.loads(pickle.dumps(RewardError("sample 3 failed")))
    assert isinstance(error, RewardError) and str(error) == "sample 3 failed"


def test_dapo_builtin_gets_max_response_length_from_the_trainer():
    cfg = RewardConfig(reward_function="examples/reward_function/dapo.py:compute_score",
                       reward_function_kwargs={"overlong_buffer_len": 4})
    # L_max = 10, L_cache = 4: sample 0 has 9 tokens -> (6 - 9) / 4 = -0.75, correct -> 1 - 0.75 = 0.25;
    # sample 1 has 7 tokens -> (6 - 7) / 4 = -0.25, wrong -> -1 - 0.25 = -1.25
    scores = score_responses(cfg, INPUTS[:2], max_response_length=10)
    assert [s["overall"] for s in scores] == pytest.approx([0.25, -1.25], abs=1e-12)


def test_a_batch_call_that_hangs_is_stopped_after_timeout_s_and_named(tmp_path):
    spec = reward_file(tmp_path, "import time\ndef score(xs):\n    time.sleep(60)\n") + ":score"
    start = time.monotonic()
    with pytest.raises(RewardError, match=r"did not return within worker.reward.timeout_s=0.5 s on the batch "
                                          r"of 3 samples"):
        score_responses(RewardConfig(reward_function=spec, timeout_s=0.5), INPUTS)
    assert time.monotonic() - start < 5


def test_a_sequential_call_that_spins_on_one_sample_is_named_by_its_index(tmp_path):
    body = "def score(x):\n    while x['ground_truth'] == '8':\n        pass\n    return {'overall': 1.0}\n"
    spec = reward_file(tmp_path, body) + ":score"
    inputs = [*INPUTS[:2], {**INPUTS[2], "ground_truth": "8"}]
    with pytest.raises(RewardError, match=r"timeout_s=0.3 s on sample 2 \(ground_truth='8'\)"):
        score_responses(RewardConfig(reward_type="sequential", reward_function=spec, timeout_s=0.3), inputs)
    # the alarm is cleared: a later slow-ish call is not interrupted
    time.sleep(0.5)
