"""Model families: one adapter per Hugging Face `model_type` (ADAPTERS), media caches, tiny test models.

Importing the package registers every adapter: each module registers its own on import.
"""

from longrl.models import adapter, qwen2_5_omni, qwen2_5_vl, qwen3_vl, vila_adapter  # noqa: F401
