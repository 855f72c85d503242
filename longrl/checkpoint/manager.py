"""Driver-side checkpoint directory: stage, commit atomically, point at the latest, prune.

Workers write their shards into `staging_dir(step)` (root/global_step_N.tmp/<role>); the driver then calls
`commit`, which adds trainer_state.json and renames the staging directory to root/global_step_N in one
`os.rename`, after every file in it was fsynced. A crash at any point leaves either the old checkpoints
untouched plus a .tmp directory (ignored and removed by the next save of that step) or a complete
global_step_N; the pointer file is replaced atomically after the rename, so it never names a directory
that is not complete. Re-saving a step that exists moves the old directory to global_step_N.old first; a
crash before the new one is in place is repaired by moving it back (`_repair`), so even with save_limit=1
there is never a moment without a complete checkpoint.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import re
import shutil
from collections.abc import Callable
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


def _fsync_tree(root: Path) -> None:
    """fsync every file and directory under `root` (DCP and torch.save do not), so the rename that
    publishes it can never survive a power loss that the data itself did not."""
    for dirpath, _, filenames in os.walk(root):
        for name in filenames:
            fd = os.open(os.path.join(dirpath, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        _fsync_dir(Path(dirpath))


class CheckpointSaveError(RuntimeError):
    """Writing a checkpoint failed (disk full, a worker error); the previous checkpoint is still the latest.
    `disk_full`: the disk had no room left, which a restart of the workers would only meet again."""

    def __init__(self, message: str, disk_full: bool = False) -> None:
        super().__init__(message)
        self.disk_full = disk_full


def _disk_state(root: Path, exc: BaseException) -> tuple[str, bool]:
    """('disk full, N bytes free of M' or 'N bytes free of M', whether full): torch.save reports ENOSPC as a
    bare 'unexpected pos' RuntimeError, and a worker's ENOSPC arrives as its traceback's text, so the free
    space is the reliable sign."""
    usage = shutil.disk_usage(root)
    chain, enospc = exc, False
    while chain is not None:
        enospc |= isinstance(chain, OSError) and chain.errno == errno.ENOSPC
        chain = chain.__cause__ or chain.__context__
    full = enospc or usage.free < min(64 << 20, usage.total // 100)
    return f"{'disk full, ' if full else ''}{usage.free} bytes free of {usage.total} under {root}", full


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
        self._repair()
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
        _fsync_tree(staging)
        final = self.step_dir(step)
        if final.exists():  # saving a step again (e.g. the end-of-training save of a step already saved)
            old = final.with_name(final.name + ".old")
            shutil.rmtree(old, ignore_errors=True)
            os.rename(final, old)  # a crash from here until the next rename is undone by _repair
            os.rename(staging, final)
            _fsync_dir(self.root)
            shutil.rmtree(old)
        else:
            os.rename(staging, final)
        _fsync_dir(self.root)
        _write_atomic(self.root / POINTER_FILE, str(step))
        logger.info("checkpoint committed: %s", final)
        self._prune(keep=final)
        return final

    def save(self, step: int, write_shards: Callable[[Path], None], driver_state: dict) -> Path:
        """Stage, let `write_shards(staging)` fill it, commit; on any failure remove the staging directory
        (it may be what filled the disk) and raise CheckpointSaveError naming the checkpoint still in force."""
        staging = self.staging_dir(step)
        try:
            write_shards(staging)
            return self.commit(step, driver_state)
        except Exception as exc:
            disk, full = _disk_state(self.root, exc)  # before the cleanup frees the space
            shutil.rmtree(staging, ignore_errors=True)
            latest = self.latest()
            kept = f"the latest checkpoint is still {latest}" if latest else "no earlier checkpoint exists"
            fix = (f"Free space under {self.root} (or set trainer.save_limit lower, or trainer.save_checkpoint_path "
                   f"to a larger disk)" if full else "Fix the cause above")
            raise CheckpointSaveError(
                f"saving step {step} into {staging} failed ({disk}): {type(exc).__name__}: {exc}\n{kept}; the run stops "
                f"here. {fix} and start the same command again to resume", disk_full=full) from exc

    def _repair(self) -> None:
        """Undo a re-save interrupted between its two renames: global_step_N.old is the complete checkpoint
        when global_step_N is not; once global_step_N is complete the .old copy is stale."""
        if not self.root.is_dir():
            return
        for old in self.root.glob("global_step_*.old"):
            final = old.with_suffix("")
            if not (old / STATE_FILE).is_file() or (final / STATE_FILE).is_file():
                shutil.rmtree(old)
            elif not final.exists():
                logger.warning("restoring %s: a re-save of that step was interrupted before it was in place", final)
                os.rename(old, final)
                _fsync_dir(self.root)

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
        self._repair()
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
