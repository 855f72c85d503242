import json
import os
import signal
import subprocess
import sys

import pytest

from longrl.checkpoint.manager import CheckpointManager


def _save(manager: CheckpointManager, step: int) -> None:
    staging = manager.staging_dir(step)
    (staging / "actor").mkdir()
    (staging / "actor" / "rank_0.pt").write_bytes(b"shard")
    manager.commit(step, {"step": step, "dataloader": {"epoch": 0, "index": step * 4}})


def _dirs(root) -> list[str]:
    return sorted(p.name for p in root.iterdir() if p.is_dir())


def test_commit_publishes_the_staging_dir_and_points_at_it(tmp_path):
    manager = CheckpointManager(tmp_path)
    staging = manager.staging_dir(5)
    assert staging == tmp_path / "global_step_5.tmp"
    (staging / "actor").mkdir()
    path = manager.commit(5, {"step": 5, "kl_coef": 0.1})
    assert path == tmp_path / "global_step_5"
    assert _dirs(tmp_path) == ["global_step_5"]
    assert (path / "actor").is_dir()
    assert json.loads((path / "trainer_state.json").read_text()) == {"step": 5, "kl_coef": 0.1}
    assert (tmp_path / "latest_checkpointed_iteration.txt").read_text() == "5"
    assert manager.latest() == path
    assert manager.driver_state(path) == {"step": 5, "kl_coef": 0.1}


def test_no_checkpoint_yet_means_latest_is_none(tmp_path):
    assert CheckpointManager(tmp_path / "not_created").latest() is None


def test_crash_mid_save_leaves_a_tmp_dir_that_latest_ignores(tmp_path):
    manager = CheckpointManager(tmp_path)
    _save(manager, 2)
    crashed = manager.staging_dir(4)  # workers wrote shards, the driver died before commit
    (crashed / "actor").mkdir()
    assert manager.latest() == tmp_path / "global_step_2"
    assert (tmp_path / "latest_checkpointed_iteration.txt").read_text() == "2"


def test_staging_again_removes_a_crashed_leftover(tmp_path):
    manager = CheckpointManager(tmp_path)
    (manager.staging_dir(4) / "half_written.pt").write_bytes(b"x")
    assert list(manager.staging_dir(4).iterdir()) == []


def test_latest_falls_back_to_the_highest_complete_step_when_the_pointer_is_stale(tmp_path):
    manager = CheckpointManager(tmp_path)
    for step in (1, 3):
        _save(manager, step)
    (tmp_path / "latest_checkpointed_iteration.txt").write_text("7")  # names a dir that is not there
    (tmp_path / "global_step_9").mkdir()  # no trainer_state.json: not a committed checkpoint
    assert manager.latest() == tmp_path / "global_step_3"
    (tmp_path / "latest_checkpointed_iteration.txt").unlink()
    assert manager.latest() == tmp_path / "global_step_3"


def test_save_limit_prunes_the_oldest_and_keeps_the_newest(tmp_path):
    manager = CheckpointManager(tmp_path, save_limit=2)
    for step in (1, 2, 3, 4):
        _save(manager, step)
    assert _dirs(tmp_path) == ["global_step_3", "global_step_4"]
    assert manager.latest() == tmp_path / "global_step_4"


def test_save_limit_never_prunes_the_checkpoint_just_committed(tmp_path):
    manager = CheckpointManager(tmp_path, save_limit=1)
    for step in (5, 6):
        _save(manager, step)
    _save(manager, 3)  # resumed from an older step: step 3 is the newest commit though not the highest
    assert _dirs(tmp_path) == ["global_step_3", "global_step_6"]  # steps (3, 5, 6): 5 goes, 3 stays
    assert manager.latest() == tmp_path / "global_step_3"


def test_committing_a_step_again_replaces_it(tmp_path):
    manager = CheckpointManager(tmp_path)
    _save(manager, 2)
    staging = manager.staging_dir(2)
    (staging / "new.pt").write_bytes(b"x")
    manager.commit(2, {"step": 2, "again": True})
    assert _dirs(tmp_path) == ["global_step_2"]
    assert sorted(p.name for p in (tmp_path / "global_step_2").iterdir()) == ["new.pt", "trainer_state.json"]


def test_commit_without_staging_says_what_to_call_first(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"call staging_dir\(3\)"):
        CheckpointManager(tmp_path).commit(3, {})


def test_driver_state_of_an_uncommitted_dir_names_the_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="trainer_state.json is missing"):
        CheckpointManager(tmp_path).driver_state(tmp_path / "global_step_1.tmp")


def test_save_limit_zero_is_refused_with_the_fix(tmp_path):
    with pytest.raises(ValueError, match="trainer.save_limit=0: keep at least 1 checkpoint, or -1 to keep all"):
        CheckpointManager(tmp_path, save_limit=0)


def test_load_checkpoint_path_takes_a_step_or_an_experiment_directory(tmp_path):
    exp = CheckpointManager(tmp_path / "exp")
    for step in (1, 2):
        exp.staging_dir(step)
        exp.commit(step, {"step": step})
    other = CheckpointManager(tmp_path / "other")
    assert other.resume_point(None) is None
    assert other.resume_point(str(tmp_path / "exp")) == tmp_path / "exp" / "global_step_2"
    assert other.resume_point(str(tmp_path / "exp" / "global_step_1")) == tmp_path / "exp" / "global_step_1"
    with pytest.raises(FileNotFoundError, match="trainer.load_checkpoint_path="):
        other.resume_point(str(tmp_path / "empty"))


def _killed_between_the_resave_renames(root) -> None:
    """Re-save step 2 in a child process that SIGKILLs itself right after the old directory was moved away
    (the window between commit's two renames), as a power cut or kill -9 there would."""
    script = f"""
import os, signal
from longrl.checkpoint import manager as m
manager = m.CheckpointManager({str(root)!r}, save_limit=1)
staging = manager.staging_dir(2)
(staging / "new.pt").write_bytes(b"new")
real_rename = os.rename
def rename_then_die(src, dst):
    real_rename(src, dst)
    if str(dst).endswith(".old"):
        os.kill(os.getpid(), signal.SIGKILL)
m.os.rename = rename_then_die
manager.commit(2, {{"step": 2, "again": True}})
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert proc.returncode == -signal.SIGKILL, proc.stderr


def test_a_kill_between_the_resave_renames_keeps_a_complete_checkpoint_with_save_limit_1(tmp_path):
    manager = CheckpointManager(tmp_path, save_limit=1)
    _save(manager, 2)
    _killed_between_the_resave_renames(tmp_path)
    assert not (tmp_path / "global_step_2").exists()  # the kill really landed inside the window
    # the next run finds the old step-2 checkpoint back in place
    latest = CheckpointManager(tmp_path, save_limit=1).latest()
    assert latest == tmp_path / "global_step_2"
    assert (latest / "actor" / "rank_0.pt").read_bytes() == b"shard"
    assert _dirs(tmp_path) == ["global_step_2", "global_step_2.tmp"]
    # and saving that step again afterwards replaces it cleanly
    _save(CheckpointManager(tmp_path, save_limit=1), 2)
    assert _dirs(tmp_path) == ["global_step_2"]


def test_every_file_is_fsynced_before_the_commit_rename(tmp_path, monkeypatch):
    from longrl.checkpoint import manager as m

    synced, renamed = [], []
    real_fsync, real_rename = os.fsync, os.rename
    monkeypatch.setattr(m.os, "fsync", lambda fd: (synced.append(os.readlink(f"/proc/self/fd/{fd}")), real_fsync(fd)))
    monkeypatch.setattr(m.os, "rename", lambda a, b: (renamed.append(len(synced)), real_rename(a, b)))
    manager = CheckpointManager(tmp_path)
    staging = manager.staging_dir(3)
    (staging / "actor" / "model_optim").mkdir(parents=True)
    for name in ("actor/rank_0.pt", "actor/rank_1.pt", "actor/model_optim/__0_0.distcp", "actor/model_optim/.metadata"):
        (staging / name).write_bytes(b"x")
    manager.commit(3, {"step": 3})
    before_rename = set(synced[: renamed[0]])
    files = {str(staging / p.relative_to(tmp_path / "global_step_3"))
             for p in (tmp_path / "global_step_3").rglob("*")}
    assert files <= before_rename, sorted(files - before_rename)


def _checkpoint_bytes(directory) -> int:
    return sum(p.stat().st_size for p in directory.rglob("*") if p.is_file())


@pytest.fixture
def small_disk(tmp_path):
    """A 192 KiB tmpfs: room for one checkpoint of a 64x64 linear layer with AdamW state, not two."""
    if os.geteuid() != 0:
        pytest.skip("mounting a size-limited tmpfs needs root; the disk-full test cannot run here")
    mount = tmp_path / "small_disk"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=192k", "tmpfs", str(mount)], check=True)
    yield mount
    subprocess.run(["umount", "--lazy", str(mount)], check=True)


def test_a_disk_that_fills_during_a_save_keeps_the_previous_checkpoint_latest(small_disk):
    import torch

    from longrl.checkpoint import CheckpointSaveError, save_train_state

    torch.manual_seed(0)
    model = torch.nn.Linear(64, 64)
    optimizer = torch.optim.AdamW(model.parameters())
    model(torch.randn(2, 64)).sum().backward()
    optimizer.step()
    manager = CheckpointManager(small_disk, save_limit=2)
    write = lambda staging: save_train_state(staging / "actor", model, optimizer, None)  # noqa: E731
    first = manager.save(1, write, {"step": 1})
    assert 60_000 < _checkpoint_bytes(first) < 120_000  # one fits in 192 KiB, two do not
    with pytest.raises(CheckpointSaveError, match=r"(?s)saving step 2 into .*global_step_2.tmp failed \(disk full, \d+ bytes free "
                                                  r"of \d+ under .*small_disk\).*latest checkpoint is still "
                                                  r".*global_step_1; the run stops") as raised:
        manager.save(2, write, {"step": 2})
    assert raised.value.disk_full  # the trainer does not restart its workers into the same full disk
    assert manager.latest() == first
    assert _dirs(small_disk) == ["global_step_1"]  # the half-written staging dir is gone, freeing the space
    assert manager.driver_state(first) == {"step": 1}


def test_a_save_that_fails_with_room_on_the_disk_is_not_called_disk_full(tmp_path):
    from longrl.checkpoint import CheckpointSaveError

    def fail(staging):
        raise RuntimeError("worker rank 1 died while running save_checkpoint")

    manager = CheckpointManager(tmp_path, save_limit=2)
    with pytest.raises(CheckpointSaveError, match=r"(?s)saving step 3 .* failed \(\d+ bytes free.*no earlier "
                                                  r"checkpoint exists; the run stops here. Fix the cause above") as raised:
        manager.save(3, fail, {"step": 3})
    assert not raised.value.disk_full and _dirs(tmp_path) == []
