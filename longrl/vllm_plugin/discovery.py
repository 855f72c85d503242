"""Make vLLM's own subprocesses find the longrl plugin when longrl runs from a source checkout.

vLLM loads general plugins from `vllm.general_plugins` entry points, also in subprocesses it
starts (e.g. the model-registry inspection run once per model class). An installed longrl
(`pip install -e .`, see vllm_replace.sh) declares the entry point; a bare checkout (tests run
from the tree) does not. `ensure_discoverable` then writes a minimal `.dist-info` that declares
it and puts that directory and the checkout on PYTHONPATH, the standard way
importlib.metadata discovers entry points, so every child process finds the plugin.
"""

from __future__ import annotations

import importlib
import os
import sys
import tempfile
from importlib.metadata import entry_points
from pathlib import Path

GROUP = "vllm.general_plugins"
NAME, VALUE = "longrl", "longrl.vllm_plugin:register"


def is_declared() -> bool:
    """Whether an installed distribution (or an earlier ensure_discoverable) declares the plugin."""
    return any(ep.name == NAME and ep.value == VALUE for ep in entry_points(group=GROUP))


def ensure_discoverable(directory: str | os.PathLike | None = None) -> Path | None:
    """Declare the entry point for this process and its children if nothing declares it yet.

    Returns the directory holding the written `.dist-info`, or None when already declared.
    """
    if is_declared():
        return None
    # one fixed directory per user by default: repeated calls reuse it instead of piling up
    default = Path(tempfile.gettempdir()) / f"longrl_vllm_plugin_{os.getuid()}"
    root = Path(directory) if directory is not None else default
    dist = root / "longrl_vllm_plugin-0.0.0.dist-info"
    dist.mkdir(parents=True, exist_ok=True)
    files = {"METADATA": "Metadata-Version: 2.1\nName: longrl-vllm-plugin\nVersion: 0.0.0\n",
             "entry_points.txt": f"[{GROUP}]\n{NAME} = {VALUE}\n"}
    for name, text in files.items():
        path = dist / name
        if not path.exists() or path.read_text() != text:  # never rewrite what another process may be reading
            path.write_text(text)
    checkout = str(Path(__file__).resolve().parents[2])  # the directory holding the longrl package
    inherited = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    os.environ["PYTHONPATH"] = os.pathsep.join([str(root), checkout, *inherited])
    sys.path.insert(0, str(root))
    importlib.invalidate_caches()
    return root
