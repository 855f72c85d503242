"""The RL algorithm, as pure tensor functions behind registries.

`python3 -m longrl.algorithms` lists the registered names. Adding an estimator or a loss is one
decorated function in the matching module, declaring what it needs (`Requires`); the config accepts
its name at once and `longrl.validation` checks the declaration.
"""

from longrl.algorithms.advantage import (
    ADVANTAGES,
    AdvantageInputs,
    compute_advantages,
    masked_whiten,
)
from longrl.algorithms.filters import groups_to_keep
from longrl.algorithms.kl import (
    KL_PENALTIES,
    AdaptiveKLController,
    FixedKLController,
    RolloutDrift,
    apply_kl_to_rewards,
    kl_penalty,
    make_kl_controller,
)
from longrl.algorithms.policy_loss import (
    POLICY_LOSSES,
    PolicyLossTerms,
    aggregate_loss,
    compute_policy_loss,
    compute_value_loss,
    masked_mean,
)
from longrl.algorithms.requirements import Requires

__all__ = [
    "ADVANTAGES", "KL_PENALTIES", "POLICY_LOSSES", "AdaptiveKLController", "AdvantageInputs", "FixedKLController",
    "PolicyLossTerms", "Requires", "RolloutDrift",
    "aggregate_loss", "apply_kl_to_rewards", "compute_advantages", "compute_policy_loss", "compute_value_loss",
    "groups_to_keep", "kl_penalty", "make_kl_controller", "masked_mean", "masked_whiten",
]
