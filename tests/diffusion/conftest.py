"""Tiny diffusers pipelines built once per session (no hub): SD3 with 32x32 images and 4x4 latents."""

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_sd3(tmp_path_factory) -> Path:
    from longrl.diffusion.tiny import build_sd3

    return build_sd3(tmp_path_factory.mktemp("tiny_sd3") / "sd3")


@pytest.fixture(scope="session")
def prompt_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("prompts") / "prompts.txt"
    path.write_text("a photo of a red cat on a table\na photo of a blue dog on a beach\n"
                    "a photo of a green car on a hill\na photo of a big house on a street\n")
    return path


@pytest.fixture(scope="session")
def tiny_wan(tmp_path_factory) -> Path:
    from longrl.diffusion.tiny import build_wan

    return build_wan(tmp_path_factory.mktemp("tiny_wan") / "wan")
