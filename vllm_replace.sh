#!/usr/bin/env bash
# Make vLLM load longrl's general plugin (a torchvision-free Qwen2-VL video processor).
#
# Long-RL's script of this name copied patched files over the installed vLLM. longrl uses
# vLLM's plugin entry point instead (vllm.general_plugins -> longrl.vllm_plugin:register):
# this script installs longrl in editable mode when no installed package declares that entry
# point, then checks that vLLM loads the plugin and that Qwen2.5-VL's vLLM module imports.
#
#   bash vllm_replace.sh           install if needed, then verify
#   bash vllm_replace.sh --check   verify only (exit 1 with the reason on failure)
#
# PYTHON selects the interpreter (default: python3 on PATH, e.g. the activated venv).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")"
PYTHON="${PYTHON:-python3}"

check_only=0
case "${1:-}" in
  --check) check_only=1 ;;
  "") ;;
  *) echo "usage: $0 [--check]" >&2; exit 2 ;;
esac

declared() {
  "$PYTHON" -c 'import sys; from longrl.vllm_plugin.discovery import is_declared; sys.exit(0 if is_declared() else 1)'
}

if ! declared; then
  if [ "$check_only" = 1 ]; then
    echo "FAIL: no installed package declares the vllm.general_plugins entry point 'longrl'; run: bash vllm_replace.sh" >&2
    exit 1
  fi
  echo "installing longrl in editable mode so that vLLM finds its plugin entry point"
  "$PYTHON" -m pip install --no-deps --quiet -e .
  if ! declared; then
    echo "FAIL: longrl is installed but declares no vllm.general_plugins entry point; add to pyproject.toml:" >&2
    echo '  [project.entry-points."vllm.general_plugins"]' >&2
    echo '  longrl = "longrl.vllm_plugin:register"' >&2
    exit 1
  fi
fi

"$PYTHON" - <<'PY'
import sys

from vllm.plugins import load_general_plugins

import longrl.vllm_plugin as plugin

load_general_plugins()
if plugin.torchvision_available():
    print("OK: torchvision is installed; the longrl plugin is a no-op and transformers' own processors are used")
    sys.exit(0)
if not plugin.is_registered():
    print("FAIL: vLLM did not run the longrl plugin (is VLLM_PLUGINS set without 'longrl'?)", file=sys.stderr)
    sys.exit(1)
try:
    import vllm.model_executor.models.qwen2_5_vl  # noqa: F401  (imports transformers' smart_resize)
    from transformers import Qwen2_5_VLConfig
    from transformers.models.auto.video_processing_auto import VIDEO_PROCESSOR_MAPPING

    cls = VIDEO_PROCESSOR_MAPPING[Qwen2_5_VLConfig]["torchvision"]
except Exception as e:  # report any failure in one line, with its type
    print(f"FAIL: the longrl plugin ran but Qwen2.5-VL still does not load: {type(e).__name__}: {e}", file=sys.stderr)
    sys.exit(1)
print(f"OK: vLLM loads the longrl plugin; Qwen2-VL video processor = {cls.__module__}.{cls.__name__}")

# Qwen2.5-Omni: Long-RL copied a patched qwen2_5_omni_thinker.py over vLLM 0.9.1's (V0 engine, weight names
# prefixed with "thinker."). Verify that the installed vLLM needs none of it: the module imports, the full Omni
# architecture is registered, the V1 engine interleaves audio and video (use_audio_in_video), and its weight
# mapper takes the "thinker."-prefixed names that longrl's weight sync sends.
try:
    import vllm.model_executor.models.qwen2_5_omni_thinker as omni
    from vllm.model_executor.models.registry import ModelRegistry

    problems = []
    if "Qwen2_5OmniForConditionalGeneration" not in ModelRegistry.get_supported_archs():
        problems.append("Qwen2_5OmniForConditionalGeneration is not a registered architecture")
    if not hasattr(omni, "merge_interleaved_embeddings"):
        problems.append("no merge_interleaved_embeddings: this vLLM cannot interleave a video's audio (use_audio_in_video)")
    mapper = omni.Qwen2_5OmniThinkerForConditionalGeneration.hf_to_vllm_mapper
    expected = {"thinker.model.layers.0.mlp.up_proj.weight": "language_model.model.layers.0.mlp.up_proj.weight",
                "thinker.lm_head.weight": "language_model.lm_head.weight",
                "thinker.audio_tower.conv1.weight": "audio_tower.conv1.weight",
                "thinker.visual.patch_embed.proj.weight": "visual.patch_embed.proj.weight"}
    for name, vllm_name in expected.items():
        if mapper._map_name(name) != vllm_name:
            problems.append(f"{name} maps to {mapper._map_name(name)!r}, not {vllm_name!r}")
except Exception as e:
    print(f"FAIL: Qwen2.5-Omni does not load in this vLLM: {type(e).__name__}: {e}", file=sys.stderr)
    sys.exit(1)
if problems:
    print("FAIL: this vLLM's Qwen2.5-Omni needs changes longrl does not make:\n  " + "\n  ".join(problems),
          file=sys.stderr)
    sys.exit(1)
print("OK: Qwen2.5-Omni needs no replacement file: the architecture is registered, use_audio_in_video interleaves "
      "in the V1 engine, and thinker.* weight names map to vLLM's modules")
PY
