#!/usr/bin/env python3
"""Merge a sharded checkpoint into a Hugging Face model directory.

    python3 scripts/model_merger.py --local_dir runs/x/global_step_N/actor [--target_dir DIR] [--hf_upload_path user/repo]
"""

import sys
from pathlib import Path

# Run as a file from a checkout (as in Long-RL/EasyR1), longrl may not be installed: use the checkout's copy.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from longrl.checkpoint.merger import main  # noqa: E402

if __name__ == "__main__":
    main()
