"""The vLLM general plugin: torchvision-free Qwen2-VL video processor, its registration, the
entry-point discovery helper and vllm_replace.sh."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import longrl.vllm_plugin as plugin
from longrl.data.video import VideoFrames, preprocess_video
from longrl.models.tiny_vl import build_qwen2_5_vl
from longrl.vllm_plugin import discovery

REPO = Path(__file__).resolve().parents[1]
MIN_PX, MAX_PX = 3136, 50176  # the tiny model's processor limits (28*28*4, 28*28*64)

needs_plugin = pytest.mark.skipif(
    plugin.torchvision_available(), reason="torchvision is installed: register() keeps transformers' processor")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    plugin.register()
    return build_qwen2_5_vl(tmp_path_factory.mktemp("tiny_vl"), min_pixels=MIN_PX, max_pixels=MAX_PX)


def _video_processor(model_dir):
    # the top-level transformers.AutoVideoProcessor is a placeholder that demands torchvision
    from transformers.models.auto.video_processing_auto import AutoVideoProcessor

    return AutoVideoProcessor.from_pretrained(model_dir)


def _frames(t: int, h: int = 70, w: int = 90) -> np.ndarray:
    return np.random.default_rng(t).integers(0, 256, (t, h, w, 3), dtype=np.uint8)


@needs_plugin
def test_register_is_idempotent_and_reports_the_processor_installed():
    assert plugin.register() is True and plugin.register() is True and plugin.is_registered()


def test_register_does_nothing_where_torchvision_is_installed(monkeypatch):
    monkeypatch.setattr(plugin, "_registered", False)
    monkeypatch.setattr(plugin, "torchvision_available", lambda: True)
    assert plugin.register() is False and not plugin.is_registered()


@needs_plugin
def test_auto_video_processor_loads_ours_with_the_checkpoints_pixel_limits(model_dir):
    vp = _video_processor(model_dir)
    assert type(vp).__module__ == "longrl.vllm_plugin.video_processor"
    assert vp.size["shortest_edge"] == MIN_PX and vp.size["longest_edge"] == MAX_PX


@needs_plugin
def test_processor_output_equals_preprocess_video_for_arrays_tensors_and_pil_frames(model_dir):
    vp = _video_processor(model_dir)
    frames = _frames(6)
    ref = preprocess_video(VideoFrames(frames, np.arange(6) / 2, 2.0, 6, "x"), MIN_PX, MAX_PX)
    as_tchw = torch.from_numpy(frames).permute(0, 3, 1, 2)
    as_pil = [Image.fromarray(f) for f in frames]
    for video in (frames, as_tchw, as_pil):
        out = vp(videos=[video], return_tensors="pt")
        torch.testing.assert_close(out["pixel_values_videos"], ref["pixel_values_videos"], rtol=0, atol=0)
        assert out["video_grid_thw"].tolist() == ref["video_grid_thw"].tolist()


@needs_plugin
def test_without_rescale_and_normalize_the_patches_stay_raw_uint8_for_vllms_device_normalize(model_dir):
    vp = _video_processor(model_dir)
    frames = _frames(4)
    raw = vp(videos=[frames], do_rescale=False, do_normalize=False, return_tensors="np")["pixel_values_videos"]
    ref = vp(videos=[frames], return_tensors="np")["pixel_values_videos"]
    assert raw.dtype == np.uint8 and raw.shape == ref.shape
    # patch vectors are channel-major (C, T, P, P): normalize each channel as vLLM does on the device
    mean, std = np.array(vp.image_mean)[None, :, None], np.array(vp.image_std)[None, :, None]
    normalized = (raw.reshape(len(raw), 3, -1) / 255 - mean) / std
    np.testing.assert_allclose(normalized.reshape(ref.shape), ref, atol=1e-5)


@needs_plugin
def test_patch_count_vllm_sizes_placeholders_with_matches_the_processor_output(model_dir):
    vp = _video_processor(model_dir)
    out = vp(videos=[_frames(5)], return_tensors="np")
    # 70x90 -> smart_resize 56x84 (multiples of 28); 5 frames -> 3 temporal groups: 3*4*6 = 72
    assert vp.get_num_of_video_patches(5, 70, 90) == len(out["pixel_values_videos"]) == 72


@needs_plugin
def test_the_qwen2_5_vl_processor_expands_the_video_placeholder(model_dir):
    from transformers import AutoProcessor

    proc = AutoProcessor.from_pretrained(model_dir)
    prompt = "<|im_start|>user\n<|vision_start|><|video_pad|><|vision_end|>Count.<|im_end|>\n"
    out = proc(text=[prompt], videos=[_frames(4, 56, 56)], return_tensors="pt")
    # grid (2, 4, 4) / 2x2 merge = 8 video tokens
    video_id = proc.tokenizer.convert_tokens_to_ids("<|video_pad|>")
    assert int((out["input_ids"] == video_id).sum()) == 8
    assert out["video_grid_thw"].tolist() == [[2, 4, 4]]


@needs_plugin
def test_vllms_qwen2_vl_module_imports_without_torchvision():
    # vllm/model_executor/models/qwen2_vl.py imports smart_resize from the torchvision module
    import vllm.model_executor.models.qwen2_5_vl as mod

    assert mod.__name__ == "vllm.model_executor.models.qwen2_5_vl"


def test_ensure_discoverable_declares_the_entry_point_for_child_processes(tmp_path, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", os.environ.get("PYTHONPATH", ""))  # restored after the test
    monkeypatch.setattr(sys, "path", list(sys.path))
    written = discovery.ensure_discoverable(tmp_path)
    assert discovery.is_declared()
    if written is not None:  # None: an installed longrl declares it already
        assert (tmp_path / "longrl_vllm_plugin-0.0.0.dist-info" / "entry_points.txt").read_text() == (
            "[vllm.general_plugins]\nlongrl = longrl.vllm_plugin:register\n")
    child = "from longrl.vllm_plugin.discovery import is_declared; print(is_declared())"
    run = subprocess.run([sys.executable, "-c", child], cwd=tmp_path, capture_output=True, text=True, check=True)
    assert run.stdout.strip() == "True"


def _vllm_replace_check(env_extra: dict[str, str], tmp_path) -> subprocess.CompletedProcess:
    discovery.ensure_discoverable(tmp_path)  # a no-op where longrl is pip-installed
    env = dict(os.environ, PYTHON=sys.executable, **env_extra)
    return subprocess.run(["bash", str(REPO / "vllm_replace.sh"), "--check"], env=env, capture_output=True, text=True)


@needs_plugin
def test_vllm_replace_check_reports_ok_when_vllm_loads_the_plugin(tmp_path, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", os.environ.get("PYTHONPATH", ""))
    monkeypatch.setattr(sys, "path", list(sys.path))
    run = _vllm_replace_check({}, tmp_path)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "OK: vLLM loads the longrl plugin" in run.stdout
    assert "OK: Qwen2.5-Omni needs no replacement file" in run.stdout


@needs_plugin
def test_vllm_replace_check_fails_clearly_when_vllm_skips_the_plugin(tmp_path, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", os.environ.get("PYTHONPATH", ""))
    monkeypatch.setattr(sys, "path", list(sys.path))
    run = _vllm_replace_check({"VLLM_PLUGINS": "some_other_plugin"}, tmp_path)
    assert run.returncode == 1 and "FAIL: vLLM did not run the longrl plugin" in run.stderr


def test_vllm_replace_sh_is_shellcheck_clean():
    shellcheck = shutil.which("shellcheck") or str(Path(sys.executable).parent / "shellcheck")
    run = subprocess.run([shellcheck, str(REPO / "vllm_replace.sh")], capture_output=True, text=True)
    assert run.returncode == 0, run.stdout
