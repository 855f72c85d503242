"""Rule-based rewards: user functions loaded from `path/to/file.py:function`, scored and checked.

Built-in functions live in examples/reward_function/ (math, r1v, dapo) so users copy and edit
them like any other reward file.
"""

from longrl.rewards.loader import load_reward_function, resolve_reward_spec
from longrl.rewards.scoring import RewardError, score_responses

__all__ = ["RewardError", "load_reward_function", "resolve_reward_spec", "score_responses"]
