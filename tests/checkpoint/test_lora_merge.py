"""A LoRA actor's checkpoint (adapters alone) merges into the base model and into a PEFT adapter directory, and
both, and the weights the rollout engine gets, compute the log-probs of the adapted model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from longrl.checkpoint.merger import ADAPTER_DIR, LORA_CONFIG, load_model_weights, merge
from longrl.checkpoint.sharded import MODEL_OPTIM_DIR, save_train_state
from longrl.config import LoraConfig, ModelConfig
from longrl.models.lora import adapters_disabled, inject_lora, merged_weights
from longrl.workers.fsdp_worker import save_actor_metadata

LORA = LoraConfig(rank=4, alpha=8, target_modules="all-linear")


def log_probs(model: torch.nn.Module, ids: torch.Tensor) -> torch.Tensor:
    """log p(ids[t+1] | ids[:t+1]), fp32: [B, L-1]."""
    with torch.no_grad():
        logits = model(input_ids=ids).logits[:, :-1].float()
    return torch.gather(torch.log_softmax(logits, -1), -1, ids[:, 1:, None]).squeeze(-1)


@pytest.fixture(scope="module")
def lora_checkpoint(tiny_qwen2, tmp_path_factory) -> tuple[torch.nn.Module, Path]:
    """An adapted tiny Qwen2 whose adapters moved (lora_B is 0 at init: the adapted model would be the base),
    saved as the actor saves it, in one process."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    model = inject_lora(AutoModelForCausalLM.from_pretrained(tiny_qwen2, dtype=torch.float32), LORA)
    torch.manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05)
    actor = tmp_path_factory.mktemp("lora") / "global_step_1" / "actor"
    save_train_state(actor, model, None, None, trainable_only=True)
    save_actor_metadata(actor, ModelConfig(model_path=str(tiny_qwen2), lora=LORA), AutoConfig.from_pretrained(tiny_qwen2),
                        AutoTokenizer.from_pretrained(tiny_qwen2))
    return model, actor


def test_the_checkpoint_holds_the_adapters_alone_and_names_the_base(lora_checkpoint, tiny_qwen2):
    model, actor = lora_checkpoint
    saved = load_model_weights(actor / MODEL_OPTIM_DIR)
    trained = {name for name, p in model.named_parameters() if p.requires_grad}
    assert set(saved) == trained and all(".lora_A." in k or ".lora_B." in k for k in saved)
    # 2 layers x 7 linear layers x (A, B); the output head (tied to the embeddings) has none
    assert len(saved) == 28
    assert json.loads((actor / LORA_CONFIG).read_text())["base_model_name_or_path"] == str(Path(tiny_qwen2).resolve())


def test_merged_model_adapter_alone_and_synced_weights_give_the_adapted_log_probs(lora_checkpoint, tiny_qwen2,
                                                                                   tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model, actor = lora_checkpoint
    target = merge(actor, tmp_path / "merged")
    ids = torch.randint(0, model.config.vocab_size, (3, 24), generator=torch.Generator().manual_seed(0))
    adapted = log_probs(model, ids)
    merged = log_probs(AutoModelForCausalLM.from_pretrained(target, dtype=torch.float32), ids)
    peft_model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_qwen2, dtype=torch.float32),
                                           target / ADAPTER_DIR)
    from_adapter = log_probs(peft_model, ids)
    # what weight sync streams to the rollout engine, loaded into the base model
    synced_model = AutoModelForCausalLM.from_pretrained(tiny_qwen2, dtype=torch.float32)
    synced = dict(merged_weights(model.state_dict().items(), LORA.alpha / LORA.rank))
    assert synced.keys() == synced_model.state_dict().keys()
    synced_model.load_state_dict(synced)
    with adapters_disabled(model):
        base = log_probs(model, ids)
    diffs = {"merged": (merged - adapted).abs().max().item(), "adapter": (from_adapter - adapted).abs().max().item(),
             "synced": (log_probs(synced_model, ids) - adapted).abs().max().item()}
    print("max |log-prob diff| to the adapted model:", diffs)
    assert max(diffs.values()) < 1e-5, diffs
    assert (base - adapted).abs().max().item() > 1e-2  # the adapters do change the model
    base_model = AutoModelForCausalLM.from_pretrained(tiny_qwen2, dtype=torch.float32)
    assert torch.equal(base, log_probs(base_model, ids))  # adapters disabled = the base model, exactly
    assert (target / "config.json").is_file() and (target / "tokenizer_config.json").is_file()
    assert not (target / LORA_CONFIG).exists()  # transformers would take the merged model for an adapter


def test_a_missing_base_model_is_named(lora_checkpoint, tmp_path):
    _, actor = lora_checkpoint
    moved = tmp_path / "actor"
    import shutil

    shutil.copytree(actor, moved)
    config = json.loads((moved / LORA_CONFIG).read_text())
    (moved / LORA_CONFIG).write_text(json.dumps({**config, "base_model_name_or_path": str(tmp_path / "gone")}))
    with pytest.raises(FileNotFoundError, match="names the base model .*gone.* holds the LoRA adapters only"):
        merge(moved, tmp_path / "merged")
