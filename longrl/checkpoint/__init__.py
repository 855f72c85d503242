"""Sharded train-state checkpoints with exact resume, atomic commit on the driver, merge to Hugging Face."""

from longrl.checkpoint.manager import CheckpointManager, CheckpointSaveError
from longrl.checkpoint.sharded import load_train_state, save_hf_metadata, save_train_state

__all__ = ["CheckpointManager", "CheckpointSaveError", "load_train_state", "save_hf_metadata", "save_train_state"]
