"""The native VILA model: projector math, tower shapes, both checkpoint forms, save -> load."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from longrl.models.tiny_vila import build_vila
from longrl.models.vila import MultimodalProjector, VILAError, VILAForCausalLM, space_to_depth, tokens_per_frame


@pytest.fixture(scope="module")
def vila_dirs(tmp_path_factory) -> dict[str, object]:
    root = tmp_path_factory.mktemp("vila")
    return {"remote": build_vila(root / "remote", "mlp_downsample_2x2_fix", "remote"),
            "dev": build_vila(root / "dev", "mlp_downsample_3x3_fix", "dev")}


def reference_space_to_depth(x: torch.Tensor, k: int) -> torch.Tensor:
    """Loop version: zero-pad the g x g grid to a multiple of k, concatenate each k x k block row by row."""
    n, p, c = x.shape
    g = int(p ** 0.5)
    m = -(-g // k)
    grid = torch.zeros(n, m * k, m * k, c)
    grid[:, :g, :g] = x.reshape(n, g, g, c)
    out = torch.zeros(n, m * m, k * k * c)
    for i in range(m):
        for j in range(m):
            parts = [grid[:, i * k + a, j * k + b] for a in range(k) for b in range(k)]
            out[:, i * m + j] = torch.cat(parts, -1)
    return out


@pytest.mark.parametrize("g,k", [(3, 2), (4, 2), (4, 3), (5, 3), (6, 3)])
def test_space_to_depth_equals_the_zero_padded_block_loop(g, k):
    x = torch.randn(2, g * g, 5)
    assert torch.equal(space_to_depth(x, k), reference_space_to_depth(x, k))


def test_space_to_depth_of_a_3x3_grid_by_2_pads_the_right_and_bottom_edge_with_zeros():
    # grid values 1..9 (one channel): blocks [[1,2],[4,5]], [[3,0],[6,0]], [[7,8],[0,0]], [[9,0],[0,0]]
    x = torch.arange(1.0, 10.0).reshape(1, 9, 1)
    assert space_to_depth(x, 2)[0].tolist() == [[1, 2, 4, 5], [3, 0, 6, 0], [7, 8, 0, 0], [9, 0, 0, 0]]


def test_projector_parameter_names_and_shapes_match_the_upstream_sequential():
    two = MultimodalProjector("mlp_downsample_2x2_fix", 32, 128)
    # [DownSample, LN(4*32), Linear(128 -> 128), GELU, Linear(128 -> 128)]
    assert {k: tuple(v.shape) for k, v in two.state_dict().items()} == {
        "layers.1.weight": (128,), "layers.1.bias": (128,), "layers.2.weight": (128, 128),
        "layers.2.bias": (128,), "layers.4.weight": (128, 128), "layers.4.bias": (128,)}
    three = MultimodalProjector("mlp_downsample_3x3_fix", 32, 128)
    # [DownSample, LN(288), Linear(288 -> 96), GELU, LN(96), Linear(96 -> 128), GELU, Linear(128 -> 128)]
    assert {k: tuple(v.shape) for k, v in three.state_dict().items() if k.endswith("weight")} == {
        "layers.1.weight": (288,), "layers.2.weight": (96, 288), "layers.4.weight": (96,),
        "layers.5.weight": (128, 96), "layers.7.weight": (128, 128)}
    # 1152-wide SigLIP at 448/14: a 32x32 grid -> 16x16 = 256 tokens (2x2), 11x11 = 121 tokens (3x3)
    assert (two.tokens(32), three.tokens(32)) == (256, 121)


def test_projector_output_is_the_mlp_of_the_space_to_depth_features():
    torch.manual_seed(0)
    proj = MultimodalProjector("mlp_downsample_3x3_fix", 8, 16)
    x = torch.randn(2, 16, 8)  # 4x4 grid -> padded 6x6 -> 4 tokens of 72 channels
    mlp = proj.layers[1:]
    assert torch.allclose(proj(x), mlp(reference_space_to_depth(x, 3)), atol=1e-6)
    assert proj(x).shape == (2, 4, 16)


def test_tower_features_are_the_second_to_last_hidden_state_projected(vila_dirs):
    model = VILAForCausalLM.from_pretrained(vila_dirs["remote"])
    pixels = torch.randn(3, 3, 42, 42)
    out = model.encode_images(pixels)
    assert out.shape == (3, 4, 128)  # 42/14 = 3x3 patches -> padded 4x4 -> 2x2 = 4 tokens of the LLM's 128
    states = model.vision_tower(pixels, output_hidden_states=True).hidden_states
    assert len(states) == 3  # embeddings + 2 layers: [-2] is the output of layer 1, before post_layernorm
    assert torch.allclose(out, model.mm_projector(states[1]), atol=1e-6)
    assert tokens_per_frame(vila_dirs["remote"]) == 5 and tokens_per_frame(vila_dirs["dev"]) == 5


def test_both_config_forms_load(vila_dirs):
    remote = json.loads((vila_dirs["remote"] / "config.json").read_text())
    dev = json.loads((vila_dirs["dev"] / "config.json").read_text())
    assert remote["model_type"] == "vila" and "AutoModel" in remote["auto_map"]
    assert dev["model_type"] == "llava_llama" and "auto_map" not in dev
    for path in vila_dirs.values():
        model = VILAForCausalLM.from_pretrained(path)
        assert model.config.model_type == "qwen2" and model.vision_tower.config.model_type == "siglip_vision_model"


def test_save_then_load_gives_the_same_weights_and_layout(vila_dirs, tmp_path):
    for form, path in vila_dirs.items():
        model = VILAForCausalLM.from_pretrained(path)
        model.save_pretrained(tmp_path / form)
        again = VILAForCausalLM.from_pretrained(tmp_path / form)
        assert json.loads((tmp_path / form / "config.json").read_text()) == model.vila_config
        state, loaded = model.state_dict(), again.state_dict()
        assert state.keys() == loaded.keys() and all(torch.equal(state[k], loaded[k]) for k in state)
        assert (tmp_path / form / "llm" / "tokenizer.json").is_file()
        assert (tmp_path / form / "vision_tower" / "preprocessor_config.json").is_file()


def test_a_directory_without_mm_projector_is_a_named_error(vila_dirs, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(vila_dirs["remote"], broken)
    shutil.rmtree(broken / "mm_projector")
    with pytest.raises(VILAError, match=r"missing mm_projector/"):
        VILAForCausalLM.from_pretrained(broken)
