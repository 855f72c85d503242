"""A name -> implementation table for one extension point (advantage estimators, policy losses, KL
estimators, rollout engines, model adapters).

It lives at the top of the package, depending on nothing but `config.ConfigError`, so every
package can keep one without importing another's. The registry knows the config key that
selects from it, so a failed lookup tells the user which key to change and what the valid
names are. An entry may declare what it needs from the rest of the configuration next to its
definition (`register(name, requires=...)`); `longrl.validation` reads those declarations.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any, Generic, TypeVar

from longrl.config import ConfigError

F = TypeVar("F", bound=Callable)


class Registry(Mapping[str, F], Generic[F]):
    """A read-only mapping filled with `@registry.register(name)`; duplicate names are refused."""

    def __init__(self, config_key: str, default_requires: Any = None) -> None:
        self.config_key = config_key
        self._entries: dict[str, F] = {}
        self._requires: dict[str, Any] = {}
        self._default_requires = default_requires

    def register(self, name: str, requires: Any = None) -> Callable[[F], F]:
        """Decorator adding `fn` under `name` with its declared requirements; raises ValueError if the name is taken."""

        def add(fn: F) -> F:
            if name in self._entries:
                raise ValueError(f"{self.config_key}: the name {name!r} is already registered to "
                                 f"{self._entries[name].__module__}.{self._entries[name].__qualname__}; "
                                 f"pick another name for {fn.__module__}.{fn.__qualname__}")
            self._entries[name] = fn
            self._requires[name] = requires if requires is not None else self._default_requires
            return fn

        return add

    def requires(self, name: str) -> Any:
        """What the entry `name` declared it needs (the registry's default when it declared nothing)."""
        self[name]  # the unknown-name error names the config key
        return self._requires[name]

    def __getitem__(self, name: str) -> F:
        try:
            return self._entries[name]
        except KeyError:
            raise ConfigError(f"{self.config_key}={name!r} is unknown; choose from {sorted(self._entries)}") from None

    # Mapping's defaults for these catch KeyError, which __getitem__ deliberately does not raise.
    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def get(self, name: str, default: F | None = None) -> F | None:
        return self._entries.get(name, default)

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.config_key!r}, {sorted(self._entries)})"
