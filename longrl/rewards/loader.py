"""Load a user reward function given as `path/to/file.py:function`.

The file is imported by path under a private module name, so a file called `math.py` does not
shadow the standard library and two files with the same name do not collide. Loaded functions
are cached per process: the trainer scores every step in a Ray task, and re-importing the
file each time would cost more than scoring.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import sys
from collections.abc import Callable
from pathlib import Path

from longrl.config import ConfigError

logger = logging.getLogger(__name__)

KEY = "worker.reward.reward_function"
# The repository root: built-in specs such as `examples/reward_function/math.py:compute_score`
# still resolve when a Ray worker runs in another working directory.
_REPO_ROOT = Path(__file__).resolve().parents[2]
_CACHE: dict[tuple[str, str], Callable] = {}


def resolve_reward_spec(spec: str) -> tuple[Path, str]:
    """Split `spec` into (absolute file path, function name), or raise naming the problem."""
    if not isinstance(spec, str) or ":" not in spec:
        raise ConfigError(f"{KEY}={spec!r} must have the form 'path/to/file.py:function', "
                          f"e.g. 'examples/reward_function/math.py:compute_score'")
    path_text, name = spec.rsplit(":", 1)
    if not path_text or not name.isidentifier():
        raise ConfigError(f"{KEY}={spec!r} must have the form 'path/to/file.py:function' with a non-empty "
                          f"path and a python identifier after the last ':'")
    path = Path(path_text).expanduser()
    candidates = [path] if path.is_absolute() else [Path.cwd() / path, _REPO_ROOT / path]
    for candidate in candidates:
        if candidate.is_file():
            return candidate.resolve(), name
    tried = ", ".join(str(c) for c in candidates)
    raise FileNotFoundError(f"{KEY}={spec!r}: reward file {path_text!r} not found (looked at {tried}); "
                            f"give an existing .py file, absolute or relative to the working directory")


def load_reward_function(spec: str) -> Callable:
    """The function named by `path/to/file.py:function`, imported once per process."""
    path, name = resolve_reward_spec(spec)
    key = (str(path), name)
    if key in _CACHE:
        return _CACHE[key]
    module_name = f"longrl_user_reward_{path.stem}_{hashlib.sha1(str(path).encode()).hexdigest()[:10]}"
    module = sys.modules.get(module_name)
    if module is None:
        module_spec = importlib.util.spec_from_file_location(module_name, path)
        if module_spec is None or module_spec.loader is None:
            raise ConfigError(f"{KEY}={spec!r}: {path} cannot be imported as a python module; use a .py file")
        module = importlib.util.module_from_spec(module_spec)
        # Registered before executing so that dataclasses and pickling inside the file work.
        sys.modules[module_name] = module
        try:
            module_spec.loader.exec_module(module)
        except Exception as exc:
            del sys.modules[module_name]
            raise ConfigError(f"{KEY}={spec!r}: importing {path} failed with "
                              f"{type(exc).__name__}: {exc}") from exc
    fn = getattr(module, name, None)
    if fn is None:
        available = sorted(k for k, v in vars(module).items() if callable(v) and not k.startswith("_")
                           and getattr(v, "__module__", None) == module_name)
        raise ConfigError(f"{KEY}={spec!r}: {path} has no function {name!r}; it defines {available}")
    if not callable(fn):
        raise ConfigError(f"{KEY}={spec!r}: {name!r} in {path} is a {type(fn).__name__}, not a function")
    _CACHE[key] = fn
    logger.info("loaded reward function %s from %s", name, path)
    return fn
