"""Reading one TOML table: typed getters whose errors name the key path, and unknown-key checks."""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import Any, TypeVar

from imgproxy.config.values import ConfigError, Secret, parse_duration, parse_size, resolve_secret

Choice = TypeVar("Choice", bound=StrEnum)


class Table:
    """A TOML table being read: typed getters that name the key path, and unknown-key checks."""

    def __init__(self, data: object, path: str) -> None:
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: expected a table")
        self.data: dict[str, Any] = data
        self.path = path
        self.seen: set[str] = set()

    def where(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def raw(self, key: str) -> object:
        self.seen.add(key)
        return self.data.get(key)

    def string(self, key: str, default: str | None = None, *, required: bool = False) -> str:
        value = self.raw(key)
        if value is None:
            if required or default is None:
                raise ConfigError(f"{self.where(key)}: is required")
            return default
        if not isinstance(value, str):
            raise ConfigError(f"{self.where(key)}: expected a string")
        return value

    def choice(self, key: str, default: Choice, wrong: str) -> Choice:
        """A member of ``default``'s enum, spelled as its value; any other string: ``key: {wrong}``."""
        value = self.string(key, default.value)
        try:
            return type(default)(value)
        except ValueError:
            raise ConfigError(f"{self.where(key)}: {wrong}") from None

    def optional_string(self, key: str) -> str | None:
        value = self.raw(key)
        if value is not None and not isinstance(value, str):
            raise ConfigError(f"{self.where(key)}: expected a string")
        return value or None

    def integer(self, key: str, default: int, low: int, high: int) -> int:
        value = self.raw(key)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{self.where(key)}: expected a whole number")
        if not low <= value <= high:
            raise ConfigError(f"{self.where(key)}: must be between {low} and {high}")
        return value

    def size(self, key: str, default: int, low: int, high: int) -> int:
        value = self.raw(key)
        if value is None:
            return default
        size = parse_size(value, self.where(key))
        if not low <= size <= high:
            raise ConfigError(f"{self.where(key)}: must be between {low} and {high} bytes")
        return size

    def boolean(self, key: str, default: bool) -> bool:
        value = self.raw(key)
        if value is None:
            return default
        if not isinstance(value, bool):
            raise ConfigError(f"{self.where(key)}: expected true or false")
        return value

    def duration(self, key: str, default: float, low: float = 0.0, high: float = 1e9) -> float:
        value = self.raw(key)
        if value is None:
            return default
        seconds = parse_duration(value, self.where(key))
        if not low <= seconds <= high:
            raise ConfigError(f"{self.where(key)}: must be between {low:g}s and {high:g}s")
        return seconds

    def string_list(self, key: str, default: tuple[str, ...]) -> tuple[str, ...]:
        value = self.raw(key)
        if value is None:
            return default
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{self.where(key)}: expected a list of strings")
        return tuple(value)

    def secret(self, key: str, environ: Mapping[str, str], *, required: bool = False) -> Secret | None:
        value = self.raw(key)
        if value is None:
            if required:
                raise ConfigError(f"{self.where(key)}: is required")
            return None
        return resolve_secret(value, self.where(key), environ)

    def table(self, key: str) -> Table:
        value = self.raw(key)
        return Table({} if value is None else value, self.where(key))

    def reject_unknown(self) -> None:
        unknown = sorted(set(self.data) - self.seen)
        if unknown:
            raise ConfigError(f"{self.where(unknown[0])}: unknown key")
