"""Flow-GRPO for diffusion models (SD3 images, Wan videos) on the one RL loop.

`sde.py` is pure torch (the SDE step with its log-prob, the window schedules); `pipelines.py`, `tiny.py` and
`worker.py` need the optional `diffusers` package (`pip install longrl[diffusion]`) and are imported only where a
diffusion model is trained.
"""
