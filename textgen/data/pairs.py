"""Paired text for sequence-to-sequence models: source and target strings, read, encoded, batched.

A seq2seq model's ids on either side are its tokenizer's ids moved up by RESERVED, which
leaves the first ids to the marks the model needs and the tokenizers lack: PAD fills a
batch's shorter rows (the loss ignores it), START is the decoder's first input, END the
token it writes when the target is complete.

The flow: `read_pairs` (textgen/data/pair_files.py) -> `PairTokenizers.fit` -> `encode_pairs`
-> `split_pairs` -> `pair_dataset`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Iterable

import numpy as np

from textgen.data.pair_files import read_pairs, stream_pairs
from textgen.data.tokenizer import Tokenizer, fit_tokenizer_stream, tokenizer_from_config
from textgen.errors import CorpusError, UsageError

if TYPE_CHECKING:
    import tensorflow as tf

PAD, START, END = 0, 1, 2
RESERVED = 3  # ids below this are the marks above; tokenizer id i is model id i + RESERVED

__all__ = ["END", "PAD", "RESERVED", "START", "EncodedPairs", "PairTokenizers", "encode_pairs", "pair_dataset",
           "pair_steps", "read_pairs", "split_pairs", "stream_pairs"]


@dataclass(frozen=True)
class PairTokenizers:
    """The tokenizers of the two sides; `source is target` when the vocabulary is shared."""

    source: Tokenizer
    target: Tokenizer

    @property
    def shared(self) -> bool:
        return self.source is self.target

    @classmethod
    def fit(cls, pairs: list[tuple[str, str]], tokenizer_config, shared: bool = True) -> "PairTokenizers":
        """Count the vocabularies of `pairs` with the `TokenizerConfig` options: one over both sides
        when `shared`, else one per side."""
        level = tokenizer_config.level
        if shared:
            both = fit_tokenizer_stream(_blocks((text for pair in pairs for text in pair), level), tokenizer_config)
            return cls(both, both)
        return cls(fit_tokenizer_stream(_blocks((s for s, _ in pairs), level), tokenizer_config),
                   fit_tokenizer_stream(_blocks((t for _, t in pairs), level), tokenizer_config))

    def get_config(self) -> dict:
        """Both tokenizers' configs, JSON-able: what a run's checkpoint keeps for --resume."""
        return {"shared": self.shared, "source": self.source.get_config(), "target": self.target.get_config()}

    @classmethod
    def from_config(cls, config: dict) -> "PairTokenizers":
        source = tokenizer_from_config(config["source"])
        return cls(source, source if config.get("shared") else tokenizer_from_config(config["target"]))

    @property
    def source_vocab_size(self) -> int:
        """Model ids on the source side: the marks and the tokens."""
        return self.source.vocab_size + RESERVED

    @property
    def target_vocab_size(self) -> int:
        return self.target.vocab_size + RESERVED

    def encode_source(self, text: str) -> np.ndarray:
        """The model ids of a source text (no marks). A word tokenizer maps unknown words to <unk>;
        a character tokenizer raises a UsageError naming the characters it lacks."""
        return _encode(self.source, text)

    def encode_target(self, text: str) -> np.ndarray:
        return _encode(self.target, text)

    def decode_source(self, model_ids) -> str:
        return _decode(self.source, model_ids)

    def decode_target(self, model_ids) -> str:
        """The text of generated model ids: stops at the first END, skips PAD and START."""
        return _decode(self.target, model_ids)


_FIT_CHUNK = 4096  # texts whose characters are counted together


def _blocks(texts: Iterable[str], level: str) -> list[str]:
    """The texts as blocks to count a vocabulary from, with nothing added that is no token of
    theirs. Characters are counted block by block, so the texts are simply concatenated a few
    thousand at a time. Words must not run from one text into the next, and a word tokenizer
    cuts its blocks only at newlines (a token it would count), so the texts are joined by
    spaces into one block."""
    texts = list(texts)
    if level == "word":
        return [" ".join(texts)]
    return ["".join(texts[i:i + _FIT_CHUNK]) for i in range(0, len(texts), _FIT_CHUNK)]


def _encode(tokenizer: Tokenizer, text: str) -> np.ndarray:
    # `encode` already does what `encode_lenient` does for both levels (a word vocabulary maps
    # unknown words to <unk>, a character one raises a UsageError naming the characters) without
    # its second pass over the text to list the unknown words, which nobody here reads.
    return tokenizer.encode(text).astype(np.int32) + RESERVED


def _decode(tokenizer: Tokenizer, model_ids) -> str:
    ids = np.asarray(model_ids, dtype=np.int64).reshape(-1)
    ends = np.flatnonzero(ids == END)
    if len(ends):
        ids = ids[:ends[0]]
    ids = ids[ids >= RESERVED]
    return tokenizer.decode(ids - RESERVED)


@dataclass(frozen=True)
class EncodedPairs:
    """Pairs as model ids without marks. `dropped`/`truncated` count the pairs longer than
    `max_length`, `unknown` those left out because a character vocabulary lacked one of their characters."""

    sources: list[np.ndarray]
    targets: list[np.ndarray]
    max_length: int
    dropped: int = 0
    truncated: int = 0
    unknown: int = 0

    def __len__(self) -> int:
        return len(self.sources)

    def describe(self) -> str:
        """"12,000 pairs; 3 longer than 64 tokens dropped"."""
        text = f"{len(self):,} pair{'s' if len(self) != 1 else ''}"
        if self.dropped:
            text += f"; {self.dropped:,} longer than {self.max_length} tokens dropped"
        if self.truncated:
            text += f"; {self.truncated:,} longer than {self.max_length} tokens truncated"
        if self.unknown:
            text += f"; {self.unknown:,} with characters the vocabulary lacks dropped"
        return text


def encode_pairs(pairs: list[tuple[str, str]], tokenizers: PairTokenizers, max_length: int,
                 long_pairs: str = "drop", unknown: str = "error") -> EncodedPairs:
    """Encode every pair; a pair with a side longer than `max_length` tokens is dropped or, with
    `long_pairs="truncate"`, cut to `max_length` on that side. The target then holds at most
    `max_length` tokens before END, so decoder rows have at most max_length + 1.

    unknown: what to do with a pair holding characters a character vocabulary lacks (pairs
        validated on, read from other files than the vocabulary): "error" raises a UsageError
        naming the pair and the characters, "drop" leaves the pair out and counts it. Word
        vocabularies encode unknown words as <unk> either way.
    """
    if long_pairs not in ("drop", "truncate") or unknown not in ("error", "drop"):
        raise ValueError(f"long_pairs must be drop or truncate and unknown error or drop, got {long_pairs!r}, "
                         f"{unknown!r}")
    if max_length < 1:
        raise ValueError(f"max_length must be at least 1, got {max_length}")
    sources, targets, counts = [], [], {"dropped": 0, "truncated": 0, "unknown": 0}
    for number, (source, target) in enumerate(pairs, start=1):
        try:
            src, tgt = tokenizers.encode_source(source), tokenizers.encode_target(target)
        except UsageError as exc:
            if unknown == "error":
                raise UsageError(f"pair {number:,} ({source[:30]!r}): {exc}") from None
            counts["unknown"] += 1
            continue
        if len(src) > max_length or len(tgt) > max_length:
            if long_pairs == "drop":
                counts["dropped"] += 1
                continue
            src, tgt = src[:max_length], tgt[:max_length]
            counts["truncated"] += 1
        sources.append(src)
        targets.append(tgt)
    if not sources:
        raise CorpusError(f"none of the {len(pairs):,} pairs is left: {counts['dropped']:,} longer than {max_length} "
                          f"tokens, {counts['unknown']:,} with characters the vocabulary lacks; raise "
                          "training.seq_length or set corpus.long_pairs: truncate")
    return EncodedPairs(sources, targets, max_length, **counts)


def split_pairs(encoded: EncodedPairs, validation_fraction: float) -> tuple[EncodedPairs, EncodedPairs]:
    """(training, validation): the tail `validation_fraction` of the pairs is held out (none when
    that would be no pair at all). The counts of long pairs stay with the training part."""
    n_val = int(len(encoded) * validation_fraction)
    cut = len(encoded) - n_val
    if cut < 1:
        raise CorpusError(f"holding out {validation_fraction:g} of {len(encoded):,} pairs leaves none to train on; "
                          "lower corpus.validation_fraction or give more pairs")
    train = replace(encoded, sources=encoded.sources[:cut], targets=encoded.targets[:cut])
    held = EncodedPairs(encoded.sources[cut:], encoded.targets[cut:], encoded.max_length)
    return train, held


def pair_steps(n_pairs: int, batch_size: int) -> int:
    """Batches in one pass over `n_pairs` pairs (the last may be short)."""
    return math.ceil(n_pairs / batch_size)


def pair_dataset(encoded: EncodedPairs, batch_size: int, *, shuffle: bool, seed: int | None = None,
                 repeat: bool = False) -> tf.data.Dataset:
    """Batches `((source (b, S), target_in (b, T)), target_out (b, T))` of int32 model ids.

    target_in is START + the target, target_out the target + END; every row is PAD-padded to
    the longest of its batch. With `shuffle`, each pass visits the pairs in a new order drawn
    from `seed` and batches pairs of similar length together; without, the pairs come in
    order, `pair_steps` batches a pass.
    """
    import tensorflow as tf  # here, so the ids and encoding above serve commands that never load TensorFlow

    sources = _ragged(encoded.sources)
    targets = _ragged(encoded.targets)
    rows = tf.data.Dataset.from_tensor_slices((sources, targets)).map(_shift, num_parallel_calls=tf.data.AUTOTUNE)
    if shuffle:
        rows = rows.shuffle(max(len(encoded), 1), seed=seed, reshuffle_each_iteration=True)
    if repeat:
        rows = rows.repeat()
    if shuffle:
        # Bucketing: batches of 64 random restore pairs (20-160 characters) are half PAD (49.5%
        # of source and decoder-target tokens, about 10,000 a batch; dates: 34%), all of it
        # computed and thrown away. Batching within 12 length buckets cuts that to 7% (dates:
        # 2.5%), measured on the shipped files. Each bucket's last batch of a pass may be short,
        # so a pass makes a few more batches than `pair_steps` (196 for 191 on restore_train);
        # with `repeat` the buckets carry over from one pass to the next.
        boundaries = _bucket_boundaries(encoded)
        batches = rows.bucket_by_sequence_length(
            _row_length, boundaries, [batch_size] * (len(boundaries) + 1),
            padding_values=((PAD, PAD), PAD), drop_remainder=False)
    else:
        batches = rows.padded_batch(batch_size, padding_values=((PAD, PAD), PAD))
    return batches.prefetch(tf.data.AUTOTUNE)


def _ragged(rows: list[np.ndarray]) -> tf.RaggedTensor:
    import tensorflow as tf

    lengths = np.array([len(r) for r in rows], dtype=np.int64)
    values = np.concatenate(rows).astype(np.int32) if rows else np.zeros(0, dtype=np.int32)
    return tf.RaggedTensor.from_row_lengths(values, lengths)


def _shift(source, target):
    """The decoder's teacher forcing: it reads START + target and must write target + END."""
    import tensorflow as tf

    target_in = tf.concat([[START], target], axis=0)
    target_out = tf.concat([target, [END]], axis=0)
    return (source, target_in), target_out


def _row_length(inputs, target_out):
    import tensorflow as tf

    return tf.maximum(tf.shape(inputs[0])[0], tf.shape(target_out)[0])


_BUCKETS = 12  # length buckets; more waste less padding but leave more short batches per pass


def _bucket_boundaries(encoded: EncodedPairs) -> list[int]:
    """Bucket edges at quantiles of the row lengths, so every bucket fills at a similar pace."""
    lengths = np.array([max(len(s), len(t) + 1) for s, t in zip(encoded.sources, encoded.targets)])
    if not len(lengths):
        return [1]
    edges = np.quantile(lengths, np.linspace(0, 1, _BUCKETS + 1)[1:-1])
    return sorted({int(e) + 1 for e in edges}) or [int(lengths.max()) + 1]
