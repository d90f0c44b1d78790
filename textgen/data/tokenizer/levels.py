"""The tokenizer levels by name: fit one for a config, or rebuild one from its saved config."""

from __future__ import annotations

from typing import Iterable

from textgen.data.tokenizer.base import Tokenizer
from textgen.data.tokenizer.char import CharTokenizer
from textgen.data.tokenizer.spacing import pattern_problem
from textgen.data.tokenizer.word import WordTokenizer
from textgen.errors import UsageError

TOKENIZERS: dict[str, type[Tokenizer]] = {CharTokenizer.level: CharTokenizer, WordTokenizer.level: WordTokenizer}


def fit_tokenizer_stream(blocks: Iterable[str], config) -> Tokenizer:
    """Build the vocabulary for `config.level` (a `TokenizerConfig`) from the corpus given in
    consecutive pieces."""
    return TOKENIZERS[config.level].fit_stream(blocks, config)


def tokenizer_from_config(config: dict) -> Tokenizer:
    """The tokenizer a saved `get_config()` describes.

    The config comes from a file (a .keras model, a cache, a checkpoint), so its shape is
    checked before any of it is used: a ValueError names what is wrong.
    """
    if not isinstance(config, dict):
        raise ValueError(f"the tokenizer config must be a mapping, got {type(config).__name__}")
    level = config.get("level")
    if not isinstance(level, str) or level not in TOKENIZERS:
        raise ValueError(f"unknown tokenizer level {level!r}")
    cls = TOKENIZERS[level]
    vocabulary = config.get("vocabulary")
    if not isinstance(vocabulary, list) or not vocabulary or not all(isinstance(t, str) and t for t in vocabulary):
        raise ValueError("the tokenizer vocabulary must be a non-empty list of non-empty strings")
    extra = sorted(str(k) for k in config if k not in {"level", "vocabulary", *cls.options})
    if extra:
        raise ValueError(f"the {level} tokenizer config has unknown keys {', '.join(extra)}")
    for key, types in cls.options.items():
        value = config.get(key)
        if key in config and (not isinstance(value, types) or (bool not in types and isinstance(value, bool))):
            raise ValueError(f"the tokenizer's {key} has the wrong type ({value!r})")
    problem = pattern_problem(config["pattern"]) if config.get("pattern") is not None else None
    if problem:
        raise ValueError(f"the tokenizer pattern {problem[0]}")
    try:
        return cls.from_config(config)
    except UsageError as exc:
        raise ValueError(str(exc)) from None
