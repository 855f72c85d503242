import json
import random

import numpy as np
import pytest
import torch

from longrl.checkpoint.sharded import load_train_state, rng_state, set_rng_state


def test_fsdp2_resume_from_checkpoint_reproduces_uninterrupted_training(fsdp_resumed):
    out = fsdp_resumed
    w_a, w_b = torch.load(out / "w_first.pt"), torch.load(out / "w_resume.pt")
    w_saved = torch.load(out / "w_saved.pt")
    assert sorted(w_a) == sorted(w_b)
    for key in w_a:
        assert w_b[key].dtype == torch.float32
        torch.testing.assert_close(w_b[key], w_a[key], atol=1e-6, rtol=0, msg=key)
    # the 2 steps after the save moved the weights, so equality above is not trivially true
    assert any(not torch.equal(w_a[key], w_saved[key]) for key in w_a)


def test_resume_returns_each_ranks_extra(fsdp_resumed):
    extras = [torch.load(fsdp_resumed / f"extra_{r}.pt") for r in (0, 1)]
    assert extras == [{"rank": 0, "step": 2}, {"rank": 1, "step": 2}]


def test_checkpoint_layout_has_dcp_dir_rank_files_and_hf_metadata(fsdp_checkpoint):
    _, ckpt, _ = fsdp_checkpoint
    assert (ckpt / "model_optim" / ".metadata").is_file()
    assert sorted(p.name for p in ckpt.glob("rank_*.pt")) == ["rank_0.pt", "rank_1.pt"]
    assert (ckpt / "huggingface" / "config.json").is_file()
    assert (ckpt / "huggingface" / "tokenizer.json").is_file()
    assert (ckpt / "huggingface" / "generation_config.json").is_file()


def test_loading_onto_another_world_size_names_both_sizes(fsdp_checkpoint):
    _, ckpt, _ = fsdp_checkpoint
    model = torch.nn.Linear(2, 2)  # never reached: the world-size check comes first
    with pytest.raises(ValueError, match="saved by a world of 2 ranks, this one has 1"):
        load_train_state(ckpt, model, None, None)


def test_rng_state_round_trip_replays_torch_python_and_numpy_draws():
    state = rng_state()
    first = (torch.rand(3), random.random(), np.random.rand(), np.random.randn())
    set_rng_state(state)
    second = (torch.rand(3), random.random(), np.random.rand(), np.random.randn())
    assert torch.equal(first[0], second[0]) and first[1:] == second[1:]


def test_copy_processor_files_adds_missing_ones_only(tmp_path):
    src, dst = tmp_path / "model", tmp_path / "hf"
    src.mkdir(), dst.mkdir()
    (src / "video_preprocessor_config.json").write_text(json.dumps({"max_pixels": 50176}))
    (src / "preprocessor_config.json").write_text("{}")
    (dst / "preprocessor_config.json").write_text('{"kept": true}')
    from longrl.checkpoint.sharded import copy_processor_files

    assert copy_processor_files(src, dst) == ["video_preprocessor_config.json"]
    assert json.loads((dst / "preprocessor_config.json").read_text()) == {"kept": True}


def test_a_model_only_checkpoint_restores_the_weights_and_restarts_the_optimizer(tmp_path, caplog):
    from longrl.checkpoint.sharded import save_train_state

    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1)
    model(torch.ones(1, 3)).sum().backward()
    optimizer.step()
    saved = {k: v.clone() for k, v in model.state_dict().items()}
    save_train_state(tmp_path / "actor", model, None, None)  # trainer.save_model_only=true

    fresh = torch.nn.Linear(3, 2)
    fresh_optimizer = torch.optim.AdamW(fresh.parameters(), lr=0.1)
    with caplog.at_level("WARNING"):
        load_train_state(tmp_path / "actor", fresh, fresh_optimizer, None)
    assert all(torch.equal(fresh.state_dict()[k], saved[k]) for k in saved)
    assert fresh_optimizer.state_dict()["state"] == {}  # AdamW moments start afresh
    assert "holds the model only" in caplog.text and "not exact" in caplog.text
