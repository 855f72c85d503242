"""`python3 -m longrl.config config=... key=value ...`: check a configuration without starting anything.

A module of its own so that the schema (longrl/config/__init__.py) still imports nothing of longrl."""

import sys

from longrl.trainer.preflight import main

sys.exit(main())
