"""Driver-side checkpoint directory: stage, commit atomically, point at the latest, prune.

Workers write their shards into `staging_dir(step)` (root/global_step_N.tmp/<role>); the driver then calls
`commit`, which adds trainer_state.json and renames the staging directory to root/global_step_N in one
`os.rename`. A crash at any point leaves either the old checkpoints untouched plus a .tmp directory (ignored
and removed by the next save of that step) or a complete global_step_N; the pointer file is replaced
atomically after the rename, so it never names a directory that is not complete.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from pathlib import Path

from longrl.config import ConfigError

logger = logging.getLogger(__name__)

STEP_DIR = re.compile(r"^global_step_(\d+)$")
POINTER_FILE = "latest_checkpointed_iteration.txt"
STATE_FILE = "trainer_state.json"


def _fsync_dir(path: Path) -> None:
    """Persist a rename/creation inside `path` (the directory entry itself) across a power loss."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class CheckpointManager:
    """Owns root/global_step_N directories; never touches torch.distributed (driver only)."""

    def __init__(self, root: str | Path, save_limit: int = -1) -> None:
        if save_limit == 0 or save_limit < -1:
            raise ConfigError(f"trainer.save_limit={save_limit}: keep at least 1 checkpoint, or -1 to keep all")
        self.root = Path(root)
        self.save_limit = save_limit

    def step_dir(self, step: int) -> Path:
        return self.root / f"global_step_{step}"

    def staging_dir(self, step: int) -> Path:
        """Empty root/global_step_N.tmp for the workers to write into (a crash's leftover is removed first)."""
        staging = self.root / f"global_step_{step}.tmp"
        if staging.exists():
            logger.warning("removing %s left by an interrupted save", staging)
            shutil.rmtree(staging)
        staging.mkdir(parents=True)
        return staging

    def commit(self, step: int, driver_state: dict) -> Path:
        """Write trainer_state.json, publish staging as global_step_N, move the pointer, prune; returns the path."""
        staging = self.root / f"global_step_{step}.tmp"
        if not staging.is_dir():
            raise FileNotFoundError(f"{staging} does not exist: call staging_dir({step}) and let the workers "
                                    f"save into it before commit({step})")
        _write_atomic(staging / STATE_FILE, json.dumps(driver_state, indent=2))
        final = self.step_dir(step)
        if final.exists():  # saving a step again (e.g. the end-of-training save of a step already saved)
            old = final.with_name(final.name + ".old")
            shutil.rmtree(old, ignore_errors=True)
            os.rename(final, old)
            os.rename(staging, final)
            shutil.rmtree(old)
        else:
            os.rename(staging, final)
        _fsync_dir(self.root)
        _write_atomic(self.root / POINTER_FILE, str(step))
        logger.info("checkpoint committed: %s", final)
        self._prune(keep=final)
        return final

    def complete_steps(self) -> list[int]:
        """Steps with a committed directory (global_step_N holding trainer_state.json), ascending."""
        steps = []
        if self.root.is_dir():
            for child in self.root.iterdir():
                match = STEP_DIR.match(child.name)
                if match and (child / STATE_FILE).is_file():
                    steps.append(int(match.group(1)))
        return sorted(steps)

    def _prune(self, keep: Path) -> None:
        if self.save_limit == -1:
            return
        steps = self.complete_steps()
        for step in steps[: max(0, len(steps) - self.save_limit)]:
            path = self.step_dir(step)
            if path != keep:
                logger.info("save_limit=%d: removing %s", self.save_limit, path)
                shutil.rmtree(path)

    def latest(self) -> Path | None:
        """The checkpoint the pointer names; else the highest complete global_step_N; None when there is none."""
        pointer = self.root / POINTER_FILE
        if pointer.is_file():
            text = pointer.read_text().strip()
            if text.isdigit() and (self.step_dir(int(text)) / STATE_FILE).is_file():
                return self.step_dir(int(text))
            logger.warning("%s says %r, which is not a complete checkpoint; using the highest complete one",
                           pointer, text)
        steps = self.complete_steps()
        return self.step_dir(steps[-1]) if steps else None

    def resume_point(self, load_checkpoint_path: str | None, find_last: bool = True) -> Path | None:
        """The checkpoint to resume from: trainer.load_checkpoint_path (a global_step_N directory, or an
        experiment directory whose latest step is taken, as in EasyR1), else the latest under root when
        `find_last` (trainer.find_last_checkpoint), else None."""
        if load_checkpoint_path is None:
            return self.latest() if find_last else None
        path = Path(load_checkpoint_path)
        if (path / STATE_FILE).is_file():
            return path
        latest = CheckpointManager(path).latest()
        if latest is None:
            raise FileNotFoundError(f"trainer.load_checkpoint_path={load_checkpoint_path!r} is neither a committed "
                                    f"global_step_N directory nor a directory holding one")
        return latest

    def driver_state(self, path: Path) -> dict:
        """The driver_state given to `commit` for checkpoint `path` (a global_step_N directory)."""
        state_file = Path(path) / STATE_FILE
        if not state_file.is_file():
            raise FileNotFoundError(f"{state_file} is missing: {path} is not a committed checkpoint; pass a "
                                    f"global_step_N directory written by CheckpointManager.commit")
        return json.loads(state_file.read_text())
