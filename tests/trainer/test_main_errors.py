"""The CLI fails at once, before any worker starts, with a message naming the problem."""

from __future__ import annotations

from longrl.trainer.main import main


def test_typo_in_a_key_names_the_valid_key(capsys):
    assert main(["config=configs/cpu_math.yaml", "worker.actor.globel_batch_size=4"]) == 2
    assert "did you mean 'worker.actor.global_batch_size'" in capsys.readouterr().err


def test_missing_data_file_is_named(capsys, tiny_qwen2):
    code = main(["config=configs/cpu_math.yaml", f"worker.actor.model.model_path={tiny_qwen2}",
                 "data.train_files=/nowhere/train.jsonl"])
    assert code == 2
    assert "/nowhere/train.jsonl" in capsys.readouterr().err


def test_missing_model_directory_is_named(capsys):
    assert main(["config=configs/cpu_math.yaml", "worker.actor.model.model_path=/nowhere/model"]) == 2
    assert "worker.actor.model.model_path='/nowhere/model' is not a local directory" in capsys.readouterr().err
