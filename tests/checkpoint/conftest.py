from pathlib import Path

import pytest

from _fsdp_world import run_world


@pytest.fixture(scope="session")
def fsdp_checkpoint(tmp_path_factory) -> tuple[Path, Path, Path]:
    """(model_dir, actor_ckpt_dir, out_dir) after the 'first' phase: 2 steps, save, 2 more steps (w_first.pt)."""
    from longrl.models.tiny import build_qwen2

    root = tmp_path_factory.mktemp("fsdp")
    model_dir = build_qwen2(root / "qwen2")
    ckpt, out = root / "global_step_2" / "actor", root / "out"
    out.mkdir()
    run_world("first", model_dir, ckpt, out)
    return model_dir, ckpt, out


@pytest.fixture(scope="session")
def fsdp_resumed(fsdp_checkpoint) -> Path:
    """out_dir after fresh processes loaded the checkpoint and trained the same 2 steps (w_resume.pt, extra_r.pt)."""
    model_dir, ckpt, out = fsdp_checkpoint
    run_world("resume", model_dir, ckpt, out)
    return out
