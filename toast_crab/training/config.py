"""Shared behaviour of the training configs: type checks and the TOML table layout.

A family's config is a frozen dataclass that inherits :class:`TomlConfig` and sets
two class attributes: ``_FAMILY`` (the family name used in messages and in the
``family`` key) and ``_LAYOUT`` (TOML table -> key -> dataclass field, or None for
keys that are read but not stored; the table ``""`` is the top level).
"""

import dataclasses
import os

__all__ = ["TomlConfig"]


class TomlConfig:
    """Mixin for frozen dataclass configs read from and written to TOML tables."""

    _FAMILY = None
    _LAYOUT = {}

    def _check_types(self):
        """Check every field against its annotated type; ints pass as floats.

        Raises:
            TypeError: Naming the entry, the expected type and the value received.
        """
        for item in dataclasses.fields(self):
            value = getattr(self, item.name)
            expected = item.type
            if expected is float and isinstance(value, int) and not isinstance(value, bool):
                object.__setattr__(self, item.name, float(value))
                continue
            if isinstance(value, bool) or not isinstance(value, expected):
                raise TypeError(
                    f"{self._FAMILY} config entry {item.name!r} must be of type "
                    f"{expected.__name__}. Got {value!r} of type {type(value).__name__}."
                )

    @classmethod
    def from_toml_dict(cls, table, source="config"):
        """Build a config from the tables of a parsed TOML file.

        Args:
            table (dict): The parsed TOML (``tomllib.load``).
            source (str): Where the table came from, for error messages.

        Raises:
            ValueError: On an unknown table or key, or a value out of range.
            TypeError: On a value of the wrong type.
        """
        kwargs = {}
        for section, value in table.items():
            if isinstance(value, dict):
                if section not in cls._LAYOUT or not section:
                    raise ValueError(
                        f"{source}: unknown table [{section}]; {cls._FAMILY} reads "
                        f"{sorted(k for k in cls._LAYOUT if k)}."
                    )
                entries = value
            else:
                section, entries = "", {section: value}
            for key, entry in entries.items():
                if key not in cls._LAYOUT[section]:
                    where = f"[{section}]" if section else "the top level"
                    raise ValueError(
                        f"{source}: unknown key {key!r} in {where}; expected one of "
                        f"{sorted(cls._LAYOUT[section])}."
                    )
                field_name = cls._LAYOUT[section][key]
                if field_name is not None:
                    kwargs[field_name] = entry
        return cls(**kwargs)

    def to_toml_dict(self):
        """Return the settings in the table layout of the TOML config."""
        table = {"family": self._FAMILY}
        for section, keys in self._LAYOUT.items():
            target = table if not section else table.setdefault(section, {})
            for key, field_name in keys.items():
                if field_name is not None:
                    value = getattr(self, field_name)
                    target[key] = list(value) if isinstance(value, tuple) else value
        return table

    def resolved_bundle_path(self):
        """Return the bundle path: ``bundle`` if set, else ``<out_dir>/<name>.keras``."""
        if self.bundle_path:
            return self.bundle_path
        return os.path.join(self.out_dir, f"{self.name}.keras")
