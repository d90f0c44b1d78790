"""Raw YAML values -> the typed config tree, with one-line errors naming the key.

Values are checked against each field's type hint: an unknown key gets the nearest valid
name, a wrong type says what was expected, an integer past its limit is caught here rather
than as an overflow deep in training.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
import types
import typing
from typing import Any

from textgen.config.schema import Config, ModelConfig
from textgen.errors import ConfigError

_KINDS = {bool: "true or false", str: "a string", int: "an integer", float: "a number"}
_YAML11_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")
# The largest value each integer key takes: far past any model or run that fits a machine, and
# inside what NumPy and TensorFlow hold (int32 sizes, int64 step counters) so a typo with extra
# digits is one line here, not an overflow deep in training. Keys not listed: 2**31 - 1.
INT_LIMITS = {
    "model.embedding_dim": 1 << 20, "model.units": 1 << 20, "model.mlp_dim": 1 << 22, "model.layers": 1024,
    "model.heads": 1024, "model.window": 1 << 20, "model.context_length": 1 << 20,
    "training.seq_length": 1 << 20, "training.batch_size": 1 << 20, "training.seed": 2**63 - 1,  # its own check says 2**32 - 1
    "tokenizer.max_vocab": 1 << 30,
}
_INT_LIMIT = 2**31 - 1


def config_from_dict(raw: dict) -> Config:
    return _build(Config, raw, "")


def model_config_from_dict(raw: dict) -> ModelConfig:
    """The model section alone, checked as in a config file (keys named model.KEY)."""
    return _build(ModelConfig, raw, "model")


def _build(cls, raw: Any, prefix: str):
    where = prefix or "the config"
    if not isinstance(raw, dict):
        raise ConfigError(f"{where} must be a mapping, got {_type_name(raw)}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    values = {}
    for key, value in raw.items():
        path = f"{prefix}.{key}" if prefix else str(key)
        if key not in fields:
            raise ConfigError(f"unknown config key {path}{_suggest(str(key), fields, prefix)}")
        hint = hints[key]
        if dataclasses.is_dataclass(hint):
            values[key] = _build(hint, {} if value is None else value, path)
        else:
            values[key] = _coerce(value, hint, path)
    return cls(**values)


class _NotFinite(ConfigError):
    """A number that is infinite or NaN, which `_coerce` reports as such inside lists too."""


def _coerce(value: Any, hint: Any, path: str) -> Any:
    """Check ``value`` against a field's type hint; return it in the field's own type."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(hint)
        if value is None and type(None) in options:
            return None
        options = [h for h in options if h is not type(None)]
        if len(options) > 1:  # `bool | str`: the first type the value has
            for option in options:
                try:
                    return _coerce(value, option, path)
                except ConfigError:
                    pass
            kinds = [_KINDS[h] for h in options]
            raise ConfigError(f"{path} must be {', '.join(kinds[:-1])} or {kinds[-1]}, got {_type_name(value)}")
        hint = options[0]
        origin = typing.get_origin(hint)
    if origin is tuple:
        item = typing.get_args(hint)[0]
        noun = {str: "strings", float: "numbers", int: "integers"}[item]
        items = value if isinstance(value, list) else [value]  # a single value stands for a one-item list
        try:
            if isinstance(value, dict) or value is None:
                raise ConfigError(path)
            return tuple(_coerce(v, item, path) for v in items)
        except _NotFinite:
            raise
        except ConfigError:
            raise ConfigError(f"{path} must be a list of {noun}, got {_type_name(value)}") from None
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{path} must be true or false, got {_type_name(value)}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{path} must be an integer, got {_type_name(value)}")
        limit = INT_LIMITS.get(path, _INT_LIMIT)
        if value > limit:
            raise ConfigError(f"{path} must be at most {limit:,}, got {value}")
        if value < -_INT_LIMIT:
            raise ConfigError(f"{path} must be at least 0, got {value}")
        return value
    if hint is float:
        if isinstance(value, str) and _YAML11_FLOAT.fullmatch(value.strip()):
            return float(value)  # YAML 1.1 reads 1e-4 (no dot) as a string; users mean the number
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{path} must be a number, got {_type_name(value)}")
        if not math.isfinite(value):  # no key means anything by infinity; null is "no limit"
            raise _NotFinite(f"{path} must be a finite number, got {value}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{path} must be a string, got {_type_name(value)}")
        return value
    raise TypeError(f"unsupported config type {hint!r} for {path}")  # a bug in this module


def _suggest(key: str, fields: dict, prefix: str) -> str:
    match = difflib.get_close_matches(key, list(fields), n=1, cutoff=0.5)
    if match:
        return f"; did you mean {prefix + '.' if prefix else ''}{match[0]}?"
    return f"; valid keys: {', '.join(fields)}"


def _type_name(value: Any) -> str:
    if value is None:
        return "nothing (null)"
    return f"{type(value).__name__} {value!r}" if not isinstance(value, (dict, list)) else type(value).__name__
