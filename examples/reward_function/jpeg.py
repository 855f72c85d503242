"""Image and video rewards that need no model: JPEG (in)compressibility, as in flow_grpo's `rewards.py`.

Diffusion reward functions get one dict per sample with `image` (a PIL image) or `frames` (a list of PIL images, a
video), `prompt` and the prompt row's `metadata`. Use as
`worker.reward.reward_function=examples/reward_function/jpeg.py:compressibility` (or `incompressibility`).
A reward that needs a model you have (aesthetic, PickScore, OCR) is a function of the same shape that loads it
once at import and scores the images in a batch.
"""

from __future__ import annotations

import io
from typing import Any


def jpeg_kilobytes(reward_input: dict[str, Any]) -> float:
    """Size in kB of the sample's JPEG at quality 95 (a video: the mean over its frames)."""
    frames = reward_input.get("frames") or [reward_input["image"]]
    sizes = []
    for frame in frames:
        buffer = io.BytesIO()
        frame.convert("RGB").save(buffer, format="JPEG", quality=95)
        sizes.append(buffer.tell() / 1000)
    return sum(sizes) / len(sizes)


def compressibility(reward_inputs: list[dict[str, Any]]) -> list[dict[str, float]]:
    """Higher for images that compress well: minus the JPEG size in kB (flow_grpo divides by 500 at 512 px)."""
    return [{"overall": -(kb := jpeg_kilobytes(r)), "jpeg_kb": kb} for r in reward_inputs]


def incompressibility(reward_inputs: list[dict[str, Any]]) -> list[dict[str, float]]:
    """Higher for images that compress badly: the JPEG size in kB."""
    return [{"overall": (kb := jpeg_kilobytes(r)), "jpeg_kb": kb} for r in reward_inputs]
