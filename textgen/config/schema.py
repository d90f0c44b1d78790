"""The run configuration's shape: a tree of frozen dataclasses with a default, a comment
and a check for every key.

Every key has a default and a comment giving its meaning or range, so a preset in
textgen/presets/ only lists what differs. Each section checks its own values when it is
made, and `Config` the rules that join two sections; a bad value is a ConfigError naming
the key.
`textgen.config.loading` reads files and --set overrides into this tree.
"""

from __future__ import annotations

import codecs
import dataclasses
import difflib
from dataclasses import dataclass, field
from typing import Any

import yaml

from textgen.config.presets import packaged_corpus
from textgen.errors import ConfigError
from textgen.models import cells

MODEL_TYPES = ("rnn", "transformer", "seq2seq")
POSITIONS = ("learned", "rotary")
SEQ2SEQ_CELLS = ("lstm", "gru")
SEQ2SEQ_ATTENTION = ("none", "additive", "multiplicative", "local")
LONG_PAIRS = ("drop", "truncate")
CELLS = cells.names()  # every registered cell kind (textgen.models.cells)
MODES = ("sequence", "window")
LABEL_MERGES = ("auto", "add", "concat")
LEVELS = ("char", "word")
OPTIMIZERS = ("adam", "adamw", "rmsprop")
SCHEDULES = ("constant", "exponential", "cosine")
DECAY_CLOCKS = ("steps", "time")
UNKNOWN_POLICIES = ("error", "unk", "drop")
PRECISIONS = ("auto", "float32", "mixed_float16", "mixed_bfloat16")
STRATEGIES = ("auto", "none", "mirrored", "multi_worker", "tpu")
LABEL_SOURCES = ("none", "files", "folders", "jsonl", "csv", "tsv")


@dataclass(frozen=True)
class CorpusConfig:
    # files, directories or globs; in a config file relative to the file's folder, in --set relative
    # to the working directory; the resolved config holds them as absolute paths. The default is the
    # Tiny Shakespeare that ships inside the package, so the defaults train from any folder
    paths: tuple[str, ...] = (packaged_corpus("tinyshakespeare.txt"),)
    encoding: str = "utf-8"  # a text encoding Python knows (utf-8, latin-1, cp1252); a UTF-8 BOM is dropped
    strip_gutenberg: bool = True  # drop Project Gutenberg header/licence when present
    validation_fraction: float = 0.1  # contiguous tail held out (of each label combination's text), in [0, 0.5]
    # where documents get labels, for a conditioned model: none | files (corpus.file_labels) | folders (a
    # directory's sub-folder names) | jsonl (one object a line) | csv | tsv (a header row names the columns);
    # docs/conditioning.md
    labels: str = "none"
    # jsonl/csv/tsv: the fields holding labels, one label group each; files/folders: the one group's name
    label_columns: tuple[str, ...] = ("label",)
    file_labels: tuple[str, ...] = ()  # files: one label per entry of corpus.paths, for every file the entry names
    text_column: str = "text"  # jsonl/csv/tsv: the field holding each document's text
    # training draws each label combination's windows in proportion to its size to this power, in [0, 1]
    # (1 = as the corpus has them, 0 = every combination equally)
    label_balance: float = 0.5
    label_dropout: float = 0.1  # share of training windows shown without labels (any), in [0, 1)
    # seq2seq: pairs files (as corpus.paths) validated on instead of the tail of corpus.paths
    validation_paths: tuple[str, ...] = ()
    long_pairs: str = "drop"  # seq2seq: a pair with a side longer than training.seq_length tokens -> drop | truncate

    def __post_init__(self):
        _require(len(self.paths) > 0, "corpus.paths", "must name at least one file, directory or glob")
        _require(all(p.strip() for p in self.paths), "corpus.paths",
                 "holds an empty path, which would read the whole working directory; name the files, "
                 "a directory or a glob")
        _require(0.0 <= self.validation_fraction <= 0.5, "corpus.validation_fraction",
                 f"must be between 0 and 0.5, got {self.validation_fraction}")
        _require(is_text_encoding(self.encoding), "corpus.encoding",
                 f"must name a text encoding Python knows, such as utf-8 or latin-1, got {self.encoding!r}")
        _require_choice(self.labels, LABEL_SOURCES, "corpus.labels")
        columns = self.label_columns
        _require(len(columns) > 0 and all(c.strip() for c in columns), "corpus.label_columns",
                 f"must name at least one label field, with no empty names, got {list(columns)}")
        _require(len(set(columns)) == len(columns), "corpus.label_columns", f"names a field twice: {list(columns)}")
        _require(self.labels not in ("files", "folders") or len(columns) == 1, "corpus.label_columns",
                 f"with corpus.labels={self.labels} names the one label group the {self.labels} give, "
                 f"got {list(columns)}")
        _require(self.labels != "files" or len(self.file_labels) == len(self.paths), "corpus.file_labels",
                 f"with corpus.labels=files gives one label per entry of corpus.paths ({len(self.paths)}), "
                 f"got {len(self.file_labels)}")
        _require(self.labels == "files" or not self.file_labels, "corpus.file_labels",
                 f"applies to corpus.labels=files (corpus.labels is {self.labels}); drop it or set corpus.labels=files")
        _require(bool(self.text_column.strip()), "corpus.text_column", "must name the field holding the text")
        _require(self.labels in ("none", "folders") or self.text_column not in columns, "corpus.text_column",
                 f"({self.text_column!r}) is also in corpus.label_columns; a field is either text or a label")
        _require(0.0 <= self.label_balance <= 1.0, "corpus.label_balance",
                 f"must be between 0 (every label combination equally) and 1 (as the corpus has them), "
                 f"got {self.label_balance}")
        _require(0.0 <= self.label_dropout < 1.0, "corpus.label_dropout",
                 f"must be in [0, 1), got {self.label_dropout}")
        _require(all(p.strip() for p in self.validation_paths), "corpus.validation_paths",
                 "holds an empty path; name the files, a directory or a glob")
        _require_choice(self.long_pairs, LONG_PAIRS, "corpus.long_pairs")


@dataclass(frozen=True)
class TokenizerConfig:
    level: str = "char"  # char | word
    lowercase: bool = False  # word level: fold case before counting
    max_vocab: int | None = None  # word level: keep at most this many words (others -> <unk>)
    min_count: int = 1  # word level: words seen fewer times become <unk>
    pattern: str | None = None  # word level: regular expression for one token
    shared_vocabulary: bool = True  # seq2seq: one vocabulary for sources and targets (false: one each)

    def __post_init__(self):
        _require_choice(self.level, LEVELS, "tokenizer.level")
        _require(self.max_vocab is None or self.max_vocab > 3, "tokenizer.max_vocab",
                 f"must be more than 3 (<unk> and the two spacing marks are always in a word vocabulary), "
                 f"got {self.max_vocab}")
        _require(self.min_count >= 1, "tokenizer.min_count", f"must be at least 1, got {self.min_count}")
        if self.pattern is not None:
            from textgen.data.tokenizer.spacing import pattern_problem  # the word tokenizer's own rule

            problem = pattern_problem(self.pattern)
            _require(problem is None, "tokenizer.pattern", problem and f"{problem[0]}; {problem[1]}")


@dataclass(frozen=True)
class ModelConfig:
    type: str = "rnn"  # rnn | transformer | seq2seq (docs/architectures.md compares them; docs/seq2seq.md)
    cell: str = "lstm"  # rnn: a registered cell kind, e.g. lstm | gru | simple_rnn (all: textgen.models.cells); seq2seq: lstm | gru
    mode: str = "sequence"  # rnn: sequence (a prediction at every step) | window (a window of tokens predicts the next)
    window: int = 40  # window mode: tokens each prediction sees; generation re-feeds this many per token
    bidirectional: bool = False  # window mode, seq2seq encoder: each recurrent layer also reads backwards
    attention: bool = False  # window mode: attention-weighted average of the outputs of every layer and the embedding
    embedding_dim: int = 256  # size of each token's vector (a transformer's width)
    units: int = 512  # rnn: recurrent units per layer
    layers: int = 1  # stacked recurrent layers (seq2seq: the encoder's), or transformer blocks
    decoder_layers: int = 1  # seq2seq: the decoder's stacked recurrent layers
    attention_type: str = "additive"  # seq2seq: none | additive | multiplicative | local (docs/seq2seq.md)
    attention_window: int = 4  # seq2seq, local attention: D, the source positions either side of the predicted one
    target_noise: float = 0.0  # seq2seq: in training, this share of the decoder's true previous tokens is replaced by random ones, in [0, 1) (docs/seq2seq.md)
    attention_positions: int = 0  # seq2seq with attention: sinusoidal features of the target and source positions joining the scores, an even number; 0: none (docs/seq2seq.md)
    same_letters: bool = False  # seq2seq: decoding holds each output to its source's letters and digits, in order, case and the rest free (restoring case and punctuation; docs/seq2seq.md)
    heads: int = 4  # transformer: attention heads; embedding_dim must divide by it
    mlp_dim: int | None = None  # transformer: hidden size of each block's MLP; null = 4 x embedding_dim
    context_length: int = 256  # transformer: most tokens attended to; >= training.seq_length
    positions: str = "learned"  # transformer: learned (a vector per position; past the context generation re-feeds it per token) | rotary (queries and keys rotated by position, each token attends to the last context_length; generation keeps a rolling cache) (docs/architectures.md)
    dropout: float = 0.0  # dropout after each recurrent layer or on each block's outputs, in [0, 1)
    embedding_dropout: float | None = None  # dropout on the embedding output, in [0, 1); null = same as dropout
    label_merge: str = "auto"  # a conditioned model: auto | add | concat, how a label's vector joins each token's embedding (auto: concat for rnn, add for a transformer; docs/conditioning.md)

    def __post_init__(self):
        _require_choice(self.type, MODEL_TYPES, "model.type")
        _require_choice(self.cell, CELLS, "model.cell")
        _require_choice(self.mode, MODES, "model.mode")
        for name in ("embedding_dim", "units", "layers", "window", "heads", "context_length", "decoder_layers",
                     "attention_window"):
            _require_positive(getattr(self, name), f"model.{name}")
        if self.mlp_dim is not None:
            _require_positive(self.mlp_dim, "model.mlp_dim")
        _require(0.0 <= self.dropout < 1.0, "model.dropout", f"must be in [0, 1), got {self.dropout}")
        _require(self.embedding_dropout is None or 0.0 <= self.embedding_dropout < 1.0, "model.embedding_dropout",
                 f"must be in [0, 1) or null, got {self.embedding_dropout}")
        _require_choice(self.label_merge, LABEL_MERGES, "model.label_merge")
        _require_choice(self.positions, POSITIONS, "model.positions")
        _require(self.label_merge != "concat" or self.type == "rnn", "model.label_merge",
                 "concat would widen a transformer, whose width is model.embedding_dim; set model.label_merge=add "
                 "(or auto)")
        _require_choice(self.attention_type, SEQ2SEQ_ATTENTION, "model.attention_type")
        _require(0.0 <= self.target_noise < 1.0, "model.target_noise", f"must be in [0, 1), got {self.target_noise}")
        _require(self.attention_positions >= 0 and self.attention_positions % 2 == 0, "model.attention_positions",
                 f"must be an even number of features (a sine and a cosine per wavelength), 0 or more, "
                 f"got {self.attention_positions}")
        if self.type == "seq2seq":
            _require(self.cell in SEQ2SEQ_CELLS, "model.cell",
                     f"must be one of {', '.join(SEQ2SEQ_CELLS)} for model.type=seq2seq, got {self.cell!r}")
            for name, default in (("mode", "sequence"), ("attention", False)):
                _require(getattr(self, name) == default, f"model.{name}",
                         "applies to language models; a seq2seq model's attention is model.attention_type "
                         f"(drop model.{name})")
        elif self.type == "transformer":
            for name, default in (("mode", "sequence"), ("bidirectional", False), ("attention", False)):
                _require(getattr(self, name) == default, f"model.{name}",
                         "applies to model.type=rnn; a transformer is a causal decoder that already attends "
                         f"over its context (drop model.{name})")
            _require(self.embedding_dim % self.heads == 0, "model.heads",
                     f"({self.heads}) must divide model.embedding_dim ({self.embedding_dim}), the transformer's "
                     f"width; e.g. model.heads={_divisor_near(self.embedding_dim, self.heads)}")
            _require(self.positions != "rotary" or (self.embedding_dim // self.heads) % 2 == 0, "model.positions",
                     f"rotary turns pairs of features, so each head's width (model.embedding_dim / model.heads = "
                     f"{self.embedding_dim // self.heads}) must be even")
        elif self.mode == "sequence":
            _require(not self.bidirectional, "model.bidirectional",
                     "would let sequence mode see the future: its backward pass reads the very tokens it "
                     "predicts; set model.mode=window to predict each token from the window before it")
            _require(not self.attention, "model.attention",
                     "averages over a window's outputs; set model.mode=window to use it")


# The model keys that shape the weights: a resumed run must keep them, and fine-tuning takes
# them from the model it starts from. Dropout, and same_letters (a rule of decoding), may change in either.
ARCHITECTURE_KEYS = tuple(f.name for f in dataclasses.fields(ModelConfig)
                          if "dropout" not in f.name and f.name != "same_letters")


def ignored_settings(config: "Config") -> list[str]:
    """Model and tokenizer keys set away from their defaults that the chosen architecture or
    tokenizer level never reads, as "model.units=384 (rnn only)". They are not errors: a
    config may switch `model.type` or `tokenizer.level` with --set and keep the rest."""
    model, tokenizer = config.model, config.tokenizer
    unread = {}  # "section.key" -> what reads it
    seq2seq_keys = ("model.decoder_layers", "model.attention_type", "model.attention_window",
                    "model.attention_positions", "model.target_noise", "model.same_letters", "tokenizer.shared_vocabulary",
                    "corpus.validation_paths", "corpus.long_pairs")
    if model.type != "seq2seq":
        unread.update(dict.fromkeys(seq2seq_keys, "seq2seq only"))
    elif model.attention_type != "local":
        unread["model.attention_window"] = "local attention only"
    if model.type == "transformer":
        unread.update({"model.cell": "rnn only", "model.units": "rnn only"})
    else:
        unread.update(dict.fromkeys(("model.heads", "model.mlp_dim", "model.context_length", "model.positions"),
                                    "transformer only"))
    if model.type != "rnn" or model.mode == "sequence":
        unread["model.window"] = "window mode only"
    if tokenizer.level == "char":
        unread.update(dict.fromkeys(("tokenizer.lowercase", "tokenizer.max_vocab", "tokenizer.min_count",
                                     "tokenizer.pattern"), "word level only"))
    given, defaults = config.to_dict(), Config().to_dict()
    ignored = []
    for dotted, reader in unread.items():
        section, key = dotted.split(".")
        if given[section][key] != defaults[section][key]:
            value = given[section][key]
            ignored.append(f"{dotted}={str(value).lower() if isinstance(value, bool) else value} ({reader})")
    return ignored


def _divisor_near(width: int, heads: int) -> int:
    """The divisor of `width` closest to `heads`, for a suggestion."""
    return min((d for d in range(1, width + 1) if width % d == 0), key=lambda d: (abs(d - heads), d))


@dataclass(frozen=True)
class TrainingConfig:
    seq_length: int = 100  # tokens per training window (the model sees seq_length, predicts the next)
    batch_size: int = 64  # windows per step
    shift_windows: bool = True  # cut each pass's windows at a random shift, so no two passes see the same windows
    epochs: int = 10  # epochs to train (the run ends after this many, or earlier on early stopping)
    steps_per_epoch: int | None = None  # optimizer steps per epoch; null = one pass over the training split
    optimizer: str = "adam"  # adam | adamw | rmsprop
    learning_rate: float = 0.002  # peak step size: after warm-up, before any decay
    lr_schedule: str = "constant"  # constant | exponential | cosine
    lr_decay: float = 0.97  # exponential: multiply the rate by this after each epoch past lr_decay_after, in (0, 1]
    lr_decay_after: int = 10  # exponential: epochs at the full rate before the decay starts
    min_learning_rate: float = 0.0  # cosine: the rate the curve reaches at the last step, below learning_rate
    decay_over: str = "steps"  # cosine: steps (epochs x steps_per_epoch) | time (the max_minutes budget, on any machine)
    warmup_steps: int = 0  # any schedule: steps rising linearly from near 0 to learning_rate first
    weight_decay: float = 0.01  # adamw: decoupled weight decay (biases are not decayed)
    clipnorm: float = 5.0  # clip each gradient's norm to this (0 disables)
    clipvalue: float = 0.0  # clip each gradient element to [-clipvalue, clipvalue] (0 disables; needs clipnorm 0)
    l2: float = 0.0  # L2 penalty on the recurrent and output kernels, added to the training loss (0 disables)
    ema_momentum: float = 0.0  # keep an average of the weights (momentum in (0, 1), e.g. 0.995) and validate and save it; 0 = off
    patience: int = 0  # early stopping: stop after this many epochs without a lower validation loss (0 = never)
    max_minutes: float | None = None  # stop cleanly after this much wall-clock time, saving the model; null = no limit
    checkpoint_every: int = 500  # save the training state for --resume every this many steps (0 = at epoch ends only)
    log_every_steps: int = 50  # TensorBoard: the mean training loss every this many steps (0 = per epoch only)
    sample_every: int = 1  # print samples at the end of every this many epochs (0 = never)
    sample_temperatures: tuple[float, ...] = (0.5, 1.0)  # one sample per temperature (0 = greedy)
    sample_length: int = 200  # tokens per printed sample
    sample_seed: str | None = None  # text the samples continue; null = the first line of the validation text
    init_from: str | None = None  # a .keras model to fine-tune: its tokenizer and architecture are reused (path as corpus.paths)
    unknown_tokens: str = "error"  # init_from: corpus tokens the model lacks -> error | unk (word models) | drop
    seed: int = 42  # seeds weights, shuffling and dropout
    precision: str = "auto"  # auto | float32 | mixed_float16 | mixed_bfloat16 (auto: fastest measured for the device)
    jit_compile: bool | str = "auto"  # XLA: auto | true | false (auto: off on a CPU, where it is slower for RNNs)
    fused_kernels: bool = True  # CPU: train LSTM/GRU layers through textgen's fused kernels (same results, faster)
    distribute: str = "auto"  # auto | none | mirrored | multi_worker | tpu (auto: TF_CONFIG cluster, else all GPUs)

    def __post_init__(self):
        for name in ("seq_length", "batch_size", "epochs", "sample_length"):
            _require_positive(getattr(self, name), f"training.{name}")
        for name in ("lr_decay_after", "warmup_steps", "patience", "checkpoint_every", "log_every_steps",
                     "sample_every"):
            _require(getattr(self, name) >= 0, f"training.{name}", f"must be 0 or more, got {getattr(self, name)}")
        for name in ("weight_decay", "clipnorm", "clipvalue", "l2"):
            _require(getattr(self, name) >= 0, f"training.{name}", f"must be 0 or more, got {getattr(self, name)}")
        if self.steps_per_epoch is not None:
            _require_positive(self.steps_per_epoch, "training.steps_per_epoch")
        _require_choice(self.optimizer, OPTIMIZERS, "training.optimizer")
        _require_choice(self.lr_schedule, SCHEDULES, "training.lr_schedule")
        _require_choice(self.unknown_tokens, UNKNOWN_POLICIES, "training.unknown_tokens")
        _require(self.learning_rate > 0, "training.learning_rate",
                 f"must be positive, got {self.learning_rate}")
        _require(0.0 < self.lr_decay <= 1.0, "training.lr_decay", f"must be in (0, 1], got {self.lr_decay}")
        _require(0.0 <= self.min_learning_rate <= self.learning_rate, "training.min_learning_rate",
                 f"must be between 0 and training.learning_rate ({self.learning_rate}), got {self.min_learning_rate}")
        _require(not (self.clipnorm and self.clipvalue), "training.clipvalue",
                 "cannot be combined with training.clipnorm; set training.clipnorm=0 to clip by value")
        _require(0 <= self.ema_momentum < 1, "training.ema_momentum",
                 f"must be 0 (off) or between 0 and 1, e.g. 0.995, got {self.ema_momentum}")
        _require(self.max_minutes is None or self.max_minutes > 0, "training.max_minutes",
                 f"must be positive or null, got {self.max_minutes}")
        _require_choice(self.decay_over, DECAY_CLOCKS, "training.decay_over")
        _require(self.decay_over == "steps" or self.lr_schedule == "cosine", "training.decay_over",
                 f"is time, which times the cosine schedule: set training.lr_schedule=cosine, not {self.lr_schedule}")
        _require(self.decay_over == "steps" or self.max_minutes, "training.decay_over",
                 "is time, which decays over the time budget: set training.max_minutes")
        _require(len(self.sample_temperatures) > 0, "training.sample_temperatures",
                 "must list at least one temperature (set training.sample_every=0 to print no samples)")
        for t in self.sample_temperatures:
            _require(t >= 0, "training.sample_temperatures", f"must be 0 (greedy) or more, got {t}")
        _require(self.sample_seed is None or self.sample_seed != "", "training.sample_seed",
                 "must be some text or null")
        _require(0 <= self.seed < 2**32, "training.seed", f"must be between 0 and 2**32 - 1, got {self.seed}")
        _require_choice(self.precision, PRECISIONS, "training.precision")
        _require_choice(self.distribute, STRATEGIES, "training.distribute")
        _require(isinstance(self.jit_compile, bool) or self.jit_compile == "auto", "training.jit_compile",
                 f"must be auto, true or false, got {self.jit_compile!r}")


@dataclass(frozen=True)
class OutputConfig:
    # run directory: model.keras, config.yaml, history.csv, logs/. A relative path is read from the
    # working directory even in a config file (runs go where the user works, never into a shared
    # configs folder); ~ is the home directory.
    dir: str = "runs/shakespeare-char"


@dataclass(frozen=True)
class Config:
    corpus: CorpusConfig = field(default_factory=CorpusConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    output: OutputConfig = field(default_factory=OutputConfig)

    def __post_init__(self):
        _require(self.model.type != "seq2seq" or self.corpus.labels == "none", "corpus.labels",
                 f"({self.corpus.labels}) conditions a language model; a seq2seq model is conditioned on its "
                 "source text, so set corpus.labels=none")
        # The checks that need two sections: a transformer has a position vector per context slot,
        _require(self.model.type != "transformer" or self.training.seq_length <= self.model.context_length,
                 "training.seq_length", f"({self.training.seq_length}) exceeds model.context_length "
                 f"({self.model.context_length}), the longest text the transformer has positions for; "
                 "raise model.context_length or lower training.seq_length")
        # and a window model's windows are cut from the training sequences, while generation fills them.
        window_mode = self.model.type == "rnn" and self.model.mode == "window"
        _require(not window_mode or self.model.window <= self.training.seq_length, "model.window",
                 f"({self.model.window}) is longer than training.seq_length ({self.training.seq_length}): training "
                 "would never show the model a full window of text, which generation feeds it; raise "
                 f"training.seq_length to {self.model.window} or more, or lower model.window")

    def to_dict(self) -> dict:
        """A plain nested dict (lists, not tuples) that YAML and JSON can hold."""
        return _plain(dataclasses.asdict(self))

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


def is_text_encoding(name: str) -> bool:
    """A codec between bytes and text (rot13 and zlib are codecs, but not text encodings)."""
    try:
        info = codecs.lookup(name)
    except LookupError:
        return False
    return getattr(info, "_is_text_encoding", True)


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
