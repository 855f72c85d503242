import pytest
import torch

from longrl.checkpoint.merger import load_model_weights, merge


def _logits(model, vocab_size: int) -> torch.Tensor:
    ids = torch.arange(24).reshape(2, 12) % vocab_size
    with torch.no_grad():
        return model(input_ids=ids).logits


def test_merged_fsdp_checkpoint_loads_with_from_pretrained_and_gives_the_saved_logits(fsdp_checkpoint, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model_dir, ckpt, out = fsdp_checkpoint
    target = merge(ckpt, tmp_path / "merged")
    merged = AutoModelForCausalLM.from_pretrained(target, dtype=torch.float32)
    saved = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    saved.load_state_dict(torch.load(out / "w_saved.pt"))  # the full weights at the moment of the save
    torch.testing.assert_close(_logits(merged, saved.config.vocab_size), _logits(saved, saved.config.vocab_size),
                               atol=1e-5, rtol=0)
    assert merged.lm_head.weight.data_ptr() == merged.model.embed_tokens.weight.data_ptr()  # still tied
    assert AutoTokenizer.from_pretrained(target)("1 + 2").input_ids == AutoTokenizer.from_pretrained(model_dir)(
        "1 + 2").input_ids


def test_model_weights_are_read_without_a_process_group_and_without_optimizer_keys(fsdp_checkpoint):
    _, ckpt, out = fsdp_checkpoint
    weights = load_model_weights(ckpt / "model_optim")
    saved = torch.load(out / "w_saved.pt")
    assert sorted(weights) == sorted(saved)  # "model." prefix stripped, no "optim." keys
    for key in saved:
        torch.testing.assert_close(weights[key], saved[key], atol=0, rtol=0, msg=key)


def test_merger_script_defaults_to_the_huggingface_dir_and_prints_it(fsdp_checkpoint, tmp_path):
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    _, ckpt, _ = fsdp_checkpoint
    local = tmp_path / "actor"
    shutil.copytree(ckpt, local)
    script = Path(__file__).resolve().parents[2] / "scripts" / "model_merger.py"
    # run from elsewhere, as a file: the script must find longrl on its own
    result = subprocess.run([sys.executable, str(script), "--local_dir", str(local)], cwd=tmp_path,
                            capture_output=True, text=True, check=True)
    assert result.stdout == f"saved Hugging Face model to {local / 'huggingface'}\n"
    assert (local / "huggingface" / "model.safetensors").is_file()


def test_merge_of_a_dir_without_hf_metadata_names_the_missing_config(tmp_path):
    with pytest.raises(FileNotFoundError, match="huggingface/config.json is missing"):
        merge(tmp_path)
