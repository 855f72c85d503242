"""Score decoded responses with the configured reward function and check what it returns.

`score_responses` is a plain module-level function taking only picklable arguments (the
reward config and a list of dicts), so the trainer can run it as a Ray task that overlaps
with the log-prob computation; the reward file is imported inside the task.
"""

from __future__ import annotations

import inspect
import logging
import math
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from longrl.config import RewardConfig
from longrl.rewards.loader import load_reward_function


logger = logging.getLogger(__name__)


class RewardError(RuntimeError):
    """The reward function raised, or returned something other than one score dict per sample."""


def _accepts(fn: Callable, name: str) -> bool:
    try:
        return name in inspect.signature(fn).parameters
    except (TypeError, ValueError):  # builtins and some C callables have no signature
        return False


def _describe(reward_inputs: list[dict[str, Any]], i: int) -> str:
    ground_truth = reward_inputs[i].get("ground_truth")
    return f"sample {i} (ground_truth={ground_truth!r})"


class _CallTimeout(Exception):
    """Raised inside a reward call by the SIGALRM handler of `_deadline`."""


@contextmanager
def _deadline(timeout_s: float | None) -> Iterator[None]:
    """Interrupt the body after `timeout_s` seconds with _CallTimeout. SIGALRM, because a hung Python call
    cannot be stopped from another thread; scoring runs in the main thread of its Ray task process (and of
    a test), elsewhere no deadline is set."""
    if timeout_s is None:
        yield
        return
    if threading.current_thread() is not threading.main_thread():
        logger.warning("worker.reward.timeout_s=%s is not enforced: scoring runs outside the main thread", timeout_s)
        yield
        return

    def expire(signum, frame):
        raise _CallTimeout()

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, timeout_s)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _timed_out(cfg: RewardConfig, where: str) -> RewardError:
    return RewardError(f"reward function {cfg.reward_function!r} did not return within worker.reward.timeout_s="
                       f"{cfg.timeout_s} s on {where}; make it faster (or stop it waiting on a lock or the "
                       f"network), or raise worker.reward.timeout_s")


def _call_failed(cfg: RewardConfig, where: str, exc: Exception) -> RewardError:
    return RewardError(f"reward function {cfg.reward_function!r} (worker.reward.reward_type={cfg.reward_type}) "
                       f"raised on {where}: {type(exc).__name__}: {exc}. Fix the function, or check that "
                       f"reward_type matches its signature (batch: list of dicts -> list of dicts; "
                       f"sequential: dict -> dict)")


def _run_batch(fn: Callable, cfg: RewardConfig, reward_inputs: list[dict[str, Any]],
               kwargs: dict[str, Any]) -> Any:
    try:
        with _deadline(cfg.timeout_s):
            return fn(list(reward_inputs), **kwargs)
    except _CallTimeout:  # no per-sample re-run: each could hang as long again
        raise _timed_out(cfg, f"the batch of {len(reward_inputs)} samples") from None
    except Exception as exc:
        # Find the culprit: re-score one sample at a time so the error can point at it.
        for i, reward_input in enumerate(reward_inputs):
            try:
                fn([reward_input], **kwargs)
            except Exception as single_exc:
                raise _call_failed(cfg, _describe(reward_inputs, i), single_exc) from single_exc
        raise _call_failed(cfg, f"the batch of {len(reward_inputs)} samples", exc) from exc


def _run_sequential(fn: Callable, cfg: RewardConfig, reward_inputs: list[dict[str, Any]],
                    kwargs: dict[str, Any]) -> list[Any]:
    scores = []
    for i, reward_input in enumerate(reward_inputs):
        try:
            with _deadline(cfg.timeout_s):
                scores.append(fn(reward_input, **kwargs))
        except _CallTimeout:
            raise _timed_out(cfg, _describe(reward_inputs, i)) from None
        except Exception as exc:
            raise _call_failed(cfg, _describe(reward_inputs, i), exc) from exc
    return scores


def _checked(cfg: RewardConfig, scores: Any, reward_inputs: list[dict[str, Any]]) -> list[dict[str, float]]:
    """Each score dict as plain floats; raise naming the sample and key that break the contract."""
    fn = cfg.reward_function
    if not isinstance(scores, (list, tuple)) or len(scores) != len(reward_inputs):
        got = f"a {type(scores).__name__} of length {len(scores)}" if isinstance(scores, (list, tuple)) \
            else f"a {type(scores).__name__}"
        raise RewardError(f"reward function {fn!r} returned {got} for {len(reward_inputs)} samples; "
                          f"it must return one dict per sample")
    out = []
    for i, score in enumerate(scores):
        if not isinstance(score, dict) or "overall" not in score:
            raise RewardError(f"reward function {fn!r} returned {score!r} for {_describe(reward_inputs, i)}; "
                              f"each result must be a dict with at least the key 'overall'")
        clean = {}
        for key, value in score.items():
            try:
                number = float(value)
            except (TypeError, ValueError):
                number = math.nan
            if not math.isfinite(number):
                raise RewardError(f"reward function {fn!r} returned {key}={value!r} for "
                                  f"{_describe(reward_inputs, i)}; every score must be a finite number")
            clean[str(key)] = number
        if out and clean.keys() != out[0].keys():  # the trainer averages every key over the batch
            raise RewardError(f"reward function {fn!r} returned the keys {sorted(clean)} for "
                              f"{_describe(reward_inputs, i)} but {sorted(out[0])} for sample 0; every sample "
                              f"must get the same keys")
        out.append(clean)
    return out


def score_responses(cfg: RewardConfig, reward_inputs: list[dict[str, Any]],
                    max_response_length: int | None = None) -> list[dict[str, float]]:
    """Scores for `reward_inputs` ({"response", "response_length", "ground_truth", ...} each).

    `max_response_length` (data.max_response_length) is passed to functions that take a
    parameter of that name, unless reward_function_kwargs sets it already (DAPO's overlong
    shaping needs it).
    """
    if not reward_inputs:
        return []
    fn = load_reward_function(cfg.reward_function)
    kwargs = dict(cfg.reward_function_kwargs)
    if max_response_length is not None and "max_response_length" not in kwargs \
            and _accepts(fn, "max_response_length"):
        kwargs["max_response_length"] = max_response_length
    if cfg.reward_type == "batch":
        scores = _run_batch(fn, cfg, reward_inputs, kwargs)
    elif cfg.reward_type == "sequential":
        scores = _run_sequential(fn, cfg, reward_inputs, kwargs)
    else:
        raise RewardError(f"worker.reward.reward_type={cfg.reward_type!r} is unknown; choose batch or sequential")
    return _checked(cfg, scores, reward_inputs)
