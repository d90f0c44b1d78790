"""Tokenizers: text <-> integer ids, with the vocabulary stored inside the saved model.

A tokenizer is plain data (its `get_config()` is a JSON-able dict) so it can travel in the
.keras file inside the model's `TokenEmbedding` layer. Encoding is vectorised with numpy:
no Python loop per character.

Two levels: `CharTokenizer` (one token per code point, in `char`) and `WordTokenizer`
(words, punctuation and newlines, detokenized with natural spacing, in `word` and
`spacing`; see docs/word-level.md). `levels` names them for configs and saved files.
"""

from textgen.data.tokenizer.base import IncrementalDecoder, Tokenizer
from textgen.data.tokenizer.char import CharTokenizer
from textgen.data.tokenizer.levels import TOKENIZERS, fit_tokenizer_stream, tokenizer_from_config
from textgen.data.tokenizer.spacing import (NOSPACE, SPACE, SPECIAL_TOKENS, UNK, default_word_pattern,
                                            normalize_whitespace)
from textgen.data.tokenizer.word import WordDecoder, WordTokenizer

__all__ = ["CharTokenizer", "IncrementalDecoder", "NOSPACE", "SPACE", "SPECIAL_TOKENS", "TOKENIZERS", "Tokenizer",
           "UNK", "WordDecoder", "WordTokenizer", "default_word_pattern", "fit_tokenizer_stream",
           "normalize_whitespace", "tokenizer_from_config"]
