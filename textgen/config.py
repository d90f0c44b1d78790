"""Run configuration: a tree of frozen dataclasses loaded from YAML.

Every key has a default and a comment giving its meaning or range, so a preset in
configs/ only lists what differs. Unknown keys and wrong types are rejected with the key
path and the nearest valid name; `--set a.b=value` overrides are parsed as YAML and checked
the same way as the file.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from textgen.errors import ConfigError

CELLS = ("lstm", "gru", "simple_rnn")
LEVELS = ("char", "word")


@dataclass(frozen=True)
class CorpusConfig:
    paths: tuple[str, ...] = ("corpora/tinyshakespeare.txt",)  # files, directories or globs
    encoding: str = "utf-8"  # any Python codec name; a UTF-8 BOM is always dropped
    strip_gutenberg: bool = True  # drop Project Gutenberg header/licence when present
    validation_fraction: float = 0.1  # contiguous tail held out, in [0, 0.5]

    def __post_init__(self):
        _require(len(self.paths) > 0, "corpus.paths", "must name at least one file, directory or glob")
        _require(0.0 <= self.validation_fraction <= 0.5, "corpus.validation_fraction",
                 f"must be between 0 and 0.5, got {self.validation_fraction}")


@dataclass(frozen=True)
class TokenizerConfig:
    level: str = "char"  # char | word
    lowercase: bool = False  # word level: fold case before counting
    max_vocab: int | None = None  # word level: keep at most this many words (others -> <unk>)
    min_count: int = 1  # word level: words seen fewer times become <unk>
    pattern: str | None = None  # word level: regular expression for one token

    def __post_init__(self):
        _require_choice(self.level, LEVELS, "tokenizer.level")
        _require(self.max_vocab is None or self.max_vocab >= 2, "tokenizer.max_vocab",
                 f"must be at least 2, got {self.max_vocab}")
        _require(self.min_count >= 1, "tokenizer.min_count", f"must be at least 1, got {self.min_count}")


@dataclass(frozen=True)
class ModelConfig:
    cell: str = "lstm"  # lstm | gru | simple_rnn
    embedding_dim: int = 256  # size of each token's vector
    units: int = 512  # recurrent units per layer
    layers: int = 1  # stacked recurrent layers
    dropout: float = 0.0  # dropout after the embedding and each recurrent layer, in [0, 1)

    def __post_init__(self):
        _require_choice(self.cell, CELLS, "model.cell")
        for name in ("embedding_dim", "units", "layers"):
            _require_positive(getattr(self, name), f"model.{name}")
        _require(0.0 <= self.dropout < 1.0, "model.dropout", f"must be in [0, 1), got {self.dropout}")


@dataclass(frozen=True)
class TrainingConfig:
    seq_length: int = 100  # tokens per training window (the model sees seq_length, predicts the next)
    batch_size: int = 64  # windows per step
    epochs: int = 10  # passes over the training split
    learning_rate: float = 0.002  # Adam step size
    clipnorm: float = 5.0  # clip each gradient's norm to this (0 disables)
    seed: int = 42  # seeds weights, shuffling and dropout

    def __post_init__(self):
        for name in ("seq_length", "batch_size", "epochs"):
            _require_positive(getattr(self, name), f"training.{name}")
        _require(self.learning_rate > 0, "training.learning_rate",
                 f"must be positive, got {self.learning_rate}")
        _require(self.clipnorm >= 0, "training.clipnorm", f"must be 0 or more, got {self.clipnorm}")


@dataclass(frozen=True)
class OutputConfig:
    dir: str = "runs/shakespeare-char"  # run directory: model.keras, config.yaml, history.csv, logs/


@dataclass(frozen=True)
class Config:
    corpus: CorpusConfig = field(default_factory=CorpusConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    output: OutputConfig = field(default_factory=OutputConfig)

    def to_dict(self) -> dict:
        """A plain nested dict (lists, not tuples) that YAML and JSON can hold."""
        return _plain(dataclasses.asdict(self))

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


# --------------------------------------------------------------------------- loading


def load_config(path: str | Path | None = None, overrides: typing.Iterable[str] = ()) -> Config:
    """Read a YAML config (or start from defaults) and apply ``KEY=VALUE`` overrides."""
    raw: dict = {}
    if path is not None:
        raw = read_yaml_mapping(path)
    for item in overrides:
        key, value = parse_override(item)
        _set_dotted(raw, key, value)
    return config_from_dict(raw)


def read_yaml_mapping(path: str | Path) -> dict:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except IsADirectoryError:
        raise ConfigError(f"config path {path} is a directory, not a YAML file") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config file {path} is not UTF-8 text (byte {exc.start})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        line = f" at line {where.line + 1}" if where is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"config file {path} is not valid YAML{line}: {problem}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must be a mapping of sections "
                          f"(corpus:, model:, ...), not a {type(data).__name__}")
    return data


def parse_override(item: str) -> tuple[str, Any]:
    """Split ``a.b=value`` and parse the value as YAML (so lists and numbers work)."""
    key, sep, text = item.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"override {item!r} must look like KEY=VALUE, e.g. training.epochs=1")
    try:
        value = yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError:
        raise ConfigError(f"override {item!r}: the value is not valid YAML; quote it") from None
    return key, value


def config_from_dict(raw: dict) -> Config:
    return _build(Config, raw, "")


def _set_dotted(tree: dict, key: str, value: Any) -> None:
    parts = key.split(".")
    node = tree
    for part in parts[:-1]:
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise ConfigError(f"override {key}: {part} is a value, not a section")
        node = child
    node[parts[-1]] = value


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


def _coerce(value: Any, hint: Any, path: str) -> Any:
    """Check ``value`` against a field's type hint; return it in the field's own type."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(hint)
        if value is None and type(None) in options:
            return None
        hint = next(h for h in options if h is not type(None))
        origin = typing.get_origin(hint)
    if origin is tuple:
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{path} must be a list of strings, got {_type_name(value)}")
        return tuple(value)
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{path} must be true or false, got {_type_name(value)}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{path} must be an integer, got {_type_name(value)}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{path} must be a number, got {_type_name(value)}")
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


def _require(ok: bool, path: str, message: str) -> None:
    if not ok:
        raise ConfigError(f"{path} {message}")


def _require_positive(value: int, path: str) -> None:
    _require(value >= 1, path, f"must be at least 1, got {value}")


def _require_choice(value: str, choices: tuple[str, ...], path: str) -> None:
    if value not in choices:
        close = difflib.get_close_matches(value, choices, n=1, cutoff=0.5)
        hint = f"; did you mean {close[0]}?" if close else ""
        raise ConfigError(f"{path} must be one of {', '.join(choices)}, got {value!r}{hint}")


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value
