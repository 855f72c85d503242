"""vLLM general plugin: run Qwen2-VL / Qwen2.5-VL / Qwen3-VL in vLLM (and transformers) without torchvision.

Declared in pyproject.toml as
    [project.entry-points."vllm.general_plugins"]
    longrl = "longrl.vllm_plugin:register"
vLLM calls every general plugin in each process it starts (main, engine core, registry
inspection), so the fix is applied wherever vLLM runs. Where torchvision is installed (GPU
installs) register() does nothing: transformers' own classes work there.

Without torchvision two things break, and register() mends both through import-time
extension points rather than by editing installed files:
1. vllm/model_executor/models/qwen2_vl.py imports `smart_resize` from
   transformers.models.qwen2_vl.image_processing_qwen2_vl, which imports torchvision at its
   top. The PIL variant of that module defines the identical `smart_resize`; we make the
   torchvision module name resolve to it.
2. transformers' Qwen2VLVideoProcessor and Qwen3VLVideoProcessor are torchvision backends. We register
   our numpy/PIL classes of the same names with AutoVideoProcessor for the Qwen2-VL, Qwen2.5-VL, Qwen2.5-Omni
   and Qwen3-VL configs.
Images need nothing more: without torchvision transformers' AutoImageProcessor picks its PIL backend
(Qwen2VLImageProcessorPil), which vLLM runs for image pixels (checked by
tests/models/test_qwen2_5_vl.py::test_trainer_log_probs_equal_vllms_for_image_prompts_from_embeddings_and_from_pixels).
"""

from __future__ import annotations

import importlib.util
import logging
import sys

logger = logging.getLogger(__name__)

_TORCHVISION_MODULE = "transformers.models.qwen2_vl.image_processing_qwen2_vl"
_registered = False


def torchvision_available() -> bool:
    """Whether torchvision is installed, judged the way transformers judges it (find_spec)."""
    return importlib.util.find_spec("torchvision") is not None


def is_registered() -> bool:
    """Whether register() has installed the torchvision-free processor in this process."""
    return _registered


def register() -> bool:
    """Install the torchvision-free Qwen2-VL video processor; True if it is (now) installed.

    Idempotent. A no-op returning False where torchvision is installed.
    """
    global _registered
    if _registered:
        return True
    if torchvision_available():
        return False
    from transformers import Qwen2_5OmniConfig, Qwen2_5_VLConfig, Qwen2VLConfig, Qwen3VLConfig, processing_utils
    from transformers.models.qwen2_5_omni.configuration_qwen2_5_omni import Qwen2_5OmniThinkerConfig
    from transformers.models.auto.video_processing_auto import AutoVideoProcessor
    from transformers.models.qwen2_vl import image_processing_pil_qwen2_vl
    from transformers.video_processing_utils import VideoProcessorMixin

    from longrl.vllm_plugin.video_processor import Qwen2VLVideoProcessor, Qwen3VLVideoProcessor

    sys.modules.setdefault(_TORCHVISION_MODULE, image_processing_pil_qwen2_vl)
    # ProcessorMixin checks a video processor against `transformers.VideoProcessorMixin`, which
    # transformers exports only when torchvision is present. processing_utils re-imports the
    # top-level package as a fresh module object (`transformers_module`), so set it there.
    processing_utils.transformers_module.VideoProcessorMixin = VideoProcessorMixin
    for config_class, processor in ((Qwen2VLConfig, Qwen2VLVideoProcessor), (Qwen2_5_VLConfig, Qwen2VLVideoProcessor),
                                    (Qwen2_5OmniConfig, Qwen2VLVideoProcessor),
                                    (Qwen2_5OmniThinkerConfig, Qwen2VLVideoProcessor),
                                    (Qwen3VLConfig, Qwen3VLVideoProcessor)):
        AutoVideoProcessor.register(config_class, video_processor_classes={"torchvision": processor, "pil": processor},
                                    exist_ok=True)
    _registered = True
    logger.info("longrl vLLM plugin: registered the torchvision-free Qwen2VLVideoProcessor")
    return True
