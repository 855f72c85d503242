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


@pytest.mark.filterwarnings("ignore:torch.distributed is disabled")
def test_vl_checkpoint_merges_into_the_class_named_by_config_architectures(tmp_path):
    from transformers import AutoModelForImageTextToText, Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    from longrl.checkpoint.sharded import save_hf_metadata, save_train_state
    from longrl.models.tiny import build_tokenizer

    tokenizer = build_tokenizer(tmp_path / "tok")
    config = Qwen2_5_VLConfig(
        text_config=dict(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1, head_dim=32,
                         rope_parameters={"rope_type": "default", "rope_theta": 1e6, "mrope_section": [4, 6, 6]}),
        vision_config=dict(depth=1, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=64),
        tie_word_embeddings=True, architectures=["Qwen2_5_VLForConditionalGeneration"])
    torch.manual_seed(0)
    model = Qwen2_5_VLForConditionalGeneration(config).eval()
    actor = tmp_path / "global_step_1" / "actor"
    save_train_state(actor, model, None, None)  # one process, no process group; a frozen model has no optimizer
    save_hf_metadata(actor, model.config, tokenizer)
    (actor / "huggingface" / "preprocessor_config.json").write_text('{"patch_size": 14}')

    target = merge(actor, tmp_path / "merged")
    merged = AutoModelForImageTextToText.from_pretrained(target, dtype=torch.float32)
    assert type(merged) is Qwen2_5_VLForConditionalGeneration
    assert (target / "preprocessor_config.json").read_text() == '{"patch_size": 14}'
    for name, tensor in model.state_dict().items():
        torch.testing.assert_close(merged.state_dict()[name], tensor, atol=0, rtol=0, msg=name)
    torch.testing.assert_close(_logits(merged, len(tokenizer)), _logits(model, len(tokenizer)), atol=1e-5, rtol=0)


def test_merge_is_strict_about_weights_the_config_expects(fsdp_checkpoint, tmp_path):
    import json
    import shutil

    _, ckpt, _ = fsdp_checkpoint
    local = tmp_path / "actor"
    shutil.copytree(ckpt, local)
    config_file = local / "huggingface" / "config.json"
    config = json.loads(config_file.read_text())
    config["num_hidden_layers"] = 3  # the checkpoint has layers 0-1: layer 2 would stay uninitialised
    config["layer_types"].append(config["layer_types"][-1])
    config_file.write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"missing \['model.layers.2.self_attn.q_proj.weight'"):
        merge(local, tmp_path / "merged")


def test_upload_without_the_hub_names_the_repo_and_keeps_the_merged_model(tmp_path):
    from longrl.checkpoint.merger import upload

    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(RuntimeError, match=r"--hf_upload_path='me/model': uploading .* failed .*the merged model is on disk"):
        upload(tmp_path, "me/model")
    assert (tmp_path / "config.json").is_file()
