"""The batch that crosses process boundaries: tensors, per-sample python objects, and meta.

Every tensor and every object array has the batch size as its first dimension. Tensors
that hold one value per response token are right-padded to a common width; `concat` pads
them again when batches of different widths meet (rollouts from different workers stop at
different lengths). Prompts travel as per-sample token lists (objects), so nothing is
padded on the left and a worker builds exactly the model inputs it needs.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import torch


def _object_array(values: Iterable[Any]) -> np.ndarray:
    """A 1-d numpy array of python objects (never a 2-d array of lists)."""
    values = list(values)
    out = np.empty(len(values), dtype=object)
    out[:] = values
    return out


@dataclasses.dataclass
class Batch:
    """Tensors (`[B, ...]`), per-sample objects (length B), and batch-level meta."""

    tensors: dict[str, torch.Tensor] = dataclasses.field(default_factory=dict)
    objects: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
    meta: dict[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        self.objects = {k: v if isinstance(v, np.ndarray) and v.ndim == 1 and v.dtype == object
                        else _object_array(v) for k, v in self.objects.items()}
        sizes = {k: len(v) for k, v in {**self.tensors, **self.objects}.items()}
        if len(set(sizes.values())) > 1:
            raise ValueError(f"Batch fields disagree on the batch size: {sizes}")

    # ---- access -------------------------------------------------------------------------
    def __len__(self) -> int:
        for value in (*self.tensors.values(), *self.objects.values()):
            return len(value)
        return 0

    def __getitem__(self, key: str) -> Any:
        if key in self.tensors:
            return self.tensors[key]
        if key in self.objects:
            return self.objects[key]
        raise KeyError(f"Batch has no field {key!r}; it has {sorted(self.keys())}")

    def __setitem__(self, key: str, value: Any) -> None:
        if isinstance(value, torch.Tensor):
            self.objects.pop(key, None)
            self.tensors[key] = value
        else:
            self.tensors.pop(key, None)
            self.objects[key] = _object_array(value)
        if len(self) != len(value):
            raise ValueError(f"field {key!r} has {len(value)} rows, the batch has {len(self)}")

    def __contains__(self, key: str) -> bool:
        return key in self.tensors or key in self.objects

    def keys(self) -> list[str]:
        return [*self.tensors, *self.objects]

    # ---- reshaping ----------------------------------------------------------------------
    def index(self, idx: Sequence[int] | np.ndarray | torch.Tensor | slice) -> Batch:
        """Rows `idx` of every field, in that order."""
        if isinstance(idx, slice):
            idx = range(len(self))[idx]
        idx_list = [int(i) for i in idx]
        idx_t = torch.as_tensor(idx_list, dtype=torch.long)
        return Batch({k: v[idx_t] for k, v in self.tensors.items()},
                     {k: v[idx_list] for k, v in self.objects.items()}, dict(self.meta))

    def select(self, *keys: str) -> Batch:
        """Only the named fields (meta is kept)."""
        missing = [k for k in keys if k not in self]
        if missing:
            raise KeyError(f"Batch has no fields {missing}; it has {sorted(self.keys())}")
        return Batch({k: v for k, v in self.tensors.items() if k in keys},
                     {k: v for k, v in self.objects.items() if k in keys}, dict(self.meta))

    def union(self, other: Batch) -> Batch:
        """Fields of both batches (same rows); `other` wins on conflicts."""
        if len(self) and len(other) and len(self) != len(other):
            raise ValueError(f"cannot union batches of {len(self)} and {len(other)} rows")
        return Batch({**self.tensors, **other.tensors}, {**self.objects, **other.objects},
                     {**self.meta, **other.meta})

    def chunk(self, n: int) -> list[Batch]:
        """`n` contiguous parts of equal size (the batch size must divide by n)."""
        if len(self) % n:
            raise ValueError(f"cannot split {len(self)} rows into {n} equal parts; pad first")
        size = len(self) // n
        return [self.index(range(i * size, (i + 1) * size)) for i in range(n)]

    def split(self, size: int) -> list[Batch]:
        """Contiguous parts of at most `size` rows."""
        return [self.index(range(i, min(i + size, len(self)))) for i in range(0, len(self), size)]

    def repeat(self, n: int) -> Batch:
        """Each row `n` times in a row (rows 0,0,1,1,... for n=2): one group per prompt."""
        return self.index(np.repeat(np.arange(len(self)), n))

    def pad_to_multiple(self, k: int) -> tuple[Batch, int]:
        """Append copies of the first rows until the size divides by k; returns the pad count."""
        pad = -len(self) % k
        if pad == 0:
            return self, 0
        return Batch.concat([self, self.index([i % len(self) for i in range(pad)])]), pad

    def to(self, device: torch.device | str) -> Batch:
        return Batch({k: v.to(device) for k, v in self.tensors.items()}, dict(self.objects), dict(self.meta))

    @staticmethod
    def concat(batches: Sequence[Batch]) -> Batch:
        """Rows of all batches in order; per-token tensors are right-padded with 0 to one width."""
        batches = [b for b in batches if len(b)] or list(batches[:1])
        first = batches[0]
        tensors = {}
        for key in first.tensors:
            parts = [b.tensors[key] for b in batches]
            if parts[0].dim() >= 2:
                width = max(p.shape[1] for p in parts)
                parts = [torch.nn.functional.pad(p, (0, 0) * (p.dim() - 2) + (0, width - p.shape[1])) for p in parts]
            tensors[key] = torch.cat(parts)
        objects = {k: np.concatenate([b.objects[k] for b in batches]) for k in first.objects}
        return Batch(tensors, objects, dict(first.meta))
