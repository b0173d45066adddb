"""Name -> factory registries (one per kind: methods, teachers, ...), in the style of timm's model registry."""

from __future__ import annotations

from typing import Callable, Generic, TypeVar

from reprodistill.errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    """A dictionary of named entries filled by a decorator.

    Args:
        kind: What the entries are, used in error messages ("method", "teacher").
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator that registers an entry under ``name``."""

        def wrap(entry: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._entries[name] = entry
            return entry

        return wrap

    def get(self, name: str) -> T:
        """Return the entry called ``name`` or raise a ConfigError listing the valid names."""
        try:
            return self._entries[name]
        except KeyError:
            raise ConfigError(
                f"unknown {self.kind} {name!r}; valid names: {', '.join(sorted(self._entries))}"
            ) from None

    def unregister(self, name: str) -> None:
        """Remove an entry (tests that register a toy one clean up with it)."""
        del self._entries[name]

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: str) -> bool:
        return name in self._entries
