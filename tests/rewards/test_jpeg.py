"""The model-free image rewards: JPEG compressibility and incompressibility."""

import numpy as np
from PIL import Image

from longrl.rewards.loader import load_reward_function

FLAT = Image.new("RGB", (32, 32), (120, 40, 200))
NOISE = Image.fromarray(np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8))


def test_a_flat_image_is_more_compressible_than_noise():
    score = load_reward_function("examples/reward_function/jpeg.py:compressibility")
    flat, noise = score([{"image": FLAT}, {"image": NOISE}])
    assert flat["overall"] > noise["overall"]
    assert flat["overall"] == -flat["jpeg_kb"] and 0 < flat["jpeg_kb"] < noise["jpeg_kb"]


def test_incompressibility_is_the_size_and_a_video_scores_the_mean_over_frames():
    score = load_reward_function("examples/reward_function/jpeg.py:incompressibility")
    flat, noise, video = score([{"image": FLAT}, {"image": NOISE}, {"frames": [FLAT, NOISE]}])
    assert noise["overall"] > flat["overall"]
    assert abs(video["overall"] - (flat["overall"] + noise["overall"]) / 2) < 1e-9
