"""Run `python3 -m longrl.config`'s check (longrl.trainer.preflight.main) on many command lines in one process.

    python tests/compat/check_argv.py < cases.json > results.json

cases.json: [{"name": ..., "argv": ["config=<yaml>", "k=v", ...]}, ...]; the yaml files may be edited here.
results.json: {name: {"first_rc": int, "rc": int, "errors": [str, ...]}}.

The loader stops at the first bad key, which would hide every later one behind it. So after an error that
names a key, that key is removed (from the argv and from the config file) and the check runs again, until it
passes or fails with an error that names no removable key (e.g. the cross-key problems of `validate`).
`errors` is every error met on the way, in order; `rc` the exit status of the last run.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import sys
from pathlib import Path

import yaml

from longrl.trainer.preflight import main as check

_KEY_IN_MESSAGE = (
    re.compile(r"config key '([^']+)'"),  # unknown keys, and keys of features not built yet
    re.compile(r"^([A-Za-z_][\w.]*?)(?:\[\d+\])?=.*(?:is not allowed|must be|is unknown)"),  # values
)
MAX_ROUNDS = 40


def named_key(error: str) -> str | None:
    """The config key an error is about, for errors about one key; None for the others."""
    if error.startswith("invalid configuration:"):
        return None
    for pattern in _KEY_IN_MESSAGE:
        match = pattern.search(error)
        if match:
            return match.group(1)
    return None


def _drop_from_yaml(path: Path, key: str) -> bool:
    tree = yaml.safe_load(path.read_text()) or {}
    *parents, leaf = key.split(".")
    node = tree
    for part in parents:
        node = node.get(part) if isinstance(node, dict) else None
        if node is None:
            return False
    if not isinstance(node, dict) or leaf not in node:
        return False
    del node[leaf]
    path.write_text(yaml.safe_dump(tree, sort_keys=False))
    return True


def without_key(argv: list[str], key: str) -> tuple[list[str], bool]:
    """`argv` without the overrides of `key` (or of keys under it), and whether anything was removed; the
    config files it names lose the key in place."""
    removed = False
    for arg in argv:
        name, _, value = arg.partition("=")
        if name == "config":
            removed |= _drop_from_yaml(Path(value), key)
    kept = [a for a in argv if not (a.partition("=")[0] == key or a.partition("=")[0].startswith(key + "."))]
    return kept, removed or len(kept) < len(argv)


def run_once(argv: list[str]) -> tuple[int, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = check(argv)
    return rc, err.getvalue().strip().removeprefix("error: ")


def check_all_errors(argv: list[str]) -> dict:
    errors: list[str] = []
    first_rc = None
    for _ in range(MAX_ROUNDS):
        rc, error = run_once(argv)
        first_rc = rc if first_rc is None else first_rc
        if rc == 0:
            break
        errors.append(error)
        key = named_key(error)
        if key is None:
            break
        argv, removed = without_key(argv, key)
        if not removed:
            break
    return {"first_rc": first_rc, "rc": rc, "errors": errors}


def main() -> None:
    cases = json.load(sys.stdin)
    results = {case["name"]: check_all_errors(list(case["argv"])) for case in cases}
    json.dump(results, sys.stdout, indent=1)


if __name__ == "__main__":
    main()
