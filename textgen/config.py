"""Run configuration: a tree of frozen dataclasses loaded from YAML.

Every key has a default and a comment giving its meaning or range, so a preset in
configs/ only lists what differs. Unknown keys and wrong types are rejected with the key
path and the nearest valid name; `--set a.b=value` overrides are parsed as YAML and checked
the same way as the file.
"""

from __future__ import annotations

import codecs
import dataclasses
import difflib
import glob
import math
import os
import re
import stat
import sys
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from textgen.errors import ConfigError

MODEL_TYPES = ("rnn", "transformer")
CELLS = ("lstm", "gru", "simple_rnn", "peephole_lstm")
MODES = ("sequence", "window")
LEVELS = ("char", "word")
OPTIMIZERS = ("adam", "adamw", "rmsprop")
SCHEDULES = ("constant", "exponential", "cosine")
UNKNOWN_POLICIES = ("error", "unk", "drop")
PRECISIONS = ("auto", "float32", "mixed_float16", "mixed_bfloat16")
STRATEGIES = ("auto", "none", "mirrored", "multi_worker", "tpu")
_KINDS = {bool: "true or false", str: "a string", int: "an integer", float: "a number"}
_YAML11_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")
MAX_CONFIG_BYTES = 1 << 20  # a config is a few hundred bytes; a larger input is the wrong file
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


@dataclass(frozen=True)
class CorpusConfig:
    # files, directories or globs; in a config file relative to the file's folder, in --set relative
    # to the working directory; the resolved config holds them as absolute paths
    paths: tuple[str, ...] = ("corpora/tinyshakespeare.txt",)
    encoding: str = "utf-8"  # a text encoding Python knows (utf-8, latin-1, cp1252); a UTF-8 BOM is dropped
    strip_gutenberg: bool = True  # drop Project Gutenberg header/licence when present
    validation_fraction: float = 0.1  # contiguous tail held out, in [0, 0.5]

    def __post_init__(self):
        _require(len(self.paths) > 0, "corpus.paths", "must name at least one file, directory or glob")
        _require(all(p.strip() for p in self.paths), "corpus.paths",
                 "holds an empty path, which would read the whole working directory; name the files, "
                 "a directory or a glob")
        _require(0.0 <= self.validation_fraction <= 0.5, "corpus.validation_fraction",
                 f"must be between 0 and 0.5, got {self.validation_fraction}")
        _require(is_text_encoding(self.encoding), "corpus.encoding",
                 f"must name a text encoding Python knows, such as utf-8 or latin-1, got {self.encoding!r}")


@dataclass(frozen=True)
class TokenizerConfig:
    level: str = "char"  # char | word
    lowercase: bool = False  # word level: fold case before counting
    max_vocab: int | None = None  # word level: keep at most this many words (others -> <unk>)
    min_count: int = 1  # word level: words seen fewer times become <unk>
    pattern: str | None = None  # word level: regular expression for one token

    def __post_init__(self):
        _require_choice(self.level, LEVELS, "tokenizer.level")
        _require(self.max_vocab is None or self.max_vocab > 3, "tokenizer.max_vocab",
                 f"must be more than 3 (<unk> and the two spacing marks are always in a word vocabulary), "
                 f"got {self.max_vocab}")
        _require(self.min_count >= 1, "tokenizer.min_count", f"must be at least 1, got {self.min_count}")
        if self.pattern is not None:
            try:
                groups = re.compile(self.pattern).groups
            except re.error as exc:
                raise ConfigError(f"tokenizer.pattern is not a valid regular expression ({exc}); fix it") from None
            _require(groups == 0, "tokenizer.pattern",
                     f"has {groups} capture group{'s' if groups != 1 else ''} ({self.pattern!r}); a token is the "
                     "whole match, so write each group as a non-capturing group (?:...)")


@dataclass(frozen=True)
class ModelConfig:
    type: str = "rnn"  # rnn | transformer (docs/architectures.md compares them)
    cell: str = "lstm"  # rnn: lstm | gru | simple_rnn | peephole_lstm
    mode: str = "sequence"  # rnn: sequence (a prediction at every step) | window (a window of tokens predicts the next)
    window: int = 40  # window mode: tokens each prediction sees; generation re-feeds this many per token
    bidirectional: bool = False  # window mode: each recurrent layer also reads the window backwards
    attention: bool = False  # window mode: attention-weighted average of the outputs of every layer and the embedding
    embedding_dim: int = 256  # size of each token's vector (a transformer's width)
    units: int = 512  # rnn: recurrent units per layer
    layers: int = 1  # stacked recurrent layers, or transformer blocks
    heads: int = 4  # transformer: attention heads; embedding_dim must divide by it
    mlp_dim: int | None = None  # transformer: hidden size of each block's MLP; null = 4 x embedding_dim
    context_length: int = 256  # transformer: most tokens attended to (positions learned); >= training.seq_length
    dropout: float = 0.0  # dropout after each recurrent layer or on each block's outputs, in [0, 1)
    embedding_dropout: float | None = None  # dropout on the embedding output, in [0, 1); null = same as dropout

    def __post_init__(self):
        _require_choice(self.type, MODEL_TYPES, "model.type")
        _require_choice(self.cell, CELLS, "model.cell")
        _require_choice(self.mode, MODES, "model.mode")
        for name in ("embedding_dim", "units", "layers", "window", "heads", "context_length"):
            _require_positive(getattr(self, name), f"model.{name}")
        if self.mlp_dim is not None:
            _require_positive(self.mlp_dim, "model.mlp_dim")
        _require(0.0 <= self.dropout < 1.0, "model.dropout", f"must be in [0, 1), got {self.dropout}")
        _require(self.embedding_dropout is None or 0.0 <= self.embedding_dropout < 1.0, "model.embedding_dropout",
                 f"must be in [0, 1) or null, got {self.embedding_dropout}")
        if self.type == "transformer":
            for name, default in (("mode", "sequence"), ("bidirectional", False), ("attention", False)):
                _require(getattr(self, name) == default, f"model.{name}",
                         "applies to model.type=rnn; a transformer is a causal decoder that already attends "
                         f"over its context (drop model.{name})")
            _require(self.embedding_dim % self.heads == 0, "model.heads",
                     f"({self.heads}) must divide model.embedding_dim ({self.embedding_dim}), the transformer's "
                     f"width; e.g. model.heads={_divisor_near(self.embedding_dim, self.heads)}")
        elif self.mode == "sequence":
            _require(not self.bidirectional, "model.bidirectional",
                     "would let sequence mode see the future: its backward pass reads the very tokens it "
                     "predicts; set model.mode=window to predict each token from the window before it")
            _require(not self.attention, "model.attention",
                     "averages over a window's outputs; set model.mode=window to use it")


# The model keys that shape the weights: a resumed run must keep them, and fine-tuning takes
# them from the model it starts from. Dropout may change in either.
ARCHITECTURE_KEYS = tuple(f.name for f in dataclasses.fields(ModelConfig) if "dropout" not in f.name)


def ignored_settings(config: "Config") -> list[str]:
    """Model and tokenizer keys set away from their defaults that the chosen architecture or
    tokenizer level never reads, as "model.units=384 (rnn only)". They are not errors: a
    config may switch `model.type` or `tokenizer.level` with --set and keep the rest."""
    model, tokenizer = config.model, config.tokenizer
    unread = {}  # "section.key" -> what reads it
    if model.type == "transformer":
        unread.update({"model.cell": "rnn only", "model.units": "rnn only"})
    else:
        unread.update(dict.fromkeys(("model.heads", "model.mlp_dim", "model.context_length"), "transformer only"))
    if model.type == "transformer" or model.mode == "sequence":
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
    warmup_steps: int = 0  # any schedule: steps rising linearly from near 0 to learning_rate first
    weight_decay: float = 0.01  # adamw: decoupled weight decay (biases are not decayed)
    clipnorm: float = 5.0  # clip each gradient's norm to this (0 disables)
    clipvalue: float = 0.0  # clip each gradient element to [-clipvalue, clipvalue] (0 disables; needs clipnorm 0)
    l2: float = 0.0  # L2 penalty on the recurrent and output kernels, added to the training loss (0 disables)
    ema_momentum: float = 0.0  # keep an average of the weights (momentum in (0, 1), e.g. 0.995) and validate and save it; 0 = off
    patience: int = 0  # early stopping: stop after this many epochs without a lower validation loss (0 = never)
    max_minutes: float | None = None  # stop cleanly after this much wall-clock time, saving the model; null = no limit
    checkpoint_every: int = 500  # save the training state for --resume every this many steps (0 = at epoch ends only)
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
        for name in ("lr_decay_after", "warmup_steps", "patience", "checkpoint_every", "sample_every"):
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


# --------------------------------------------------------------------------- loading


STDIN = "-"  # the path that means standard input


def load_config(path: str | Path | None = None, overrides: typing.Iterable[str] = (), *,
                base: dict | None = None, check_corpus: bool = False) -> Config:
    """Read a YAML config (or start from `base`, else the defaults) and apply ``KEY=VALUE`` overrides.

    `path` "-" reads the config from stdin. Paths in a config file (corpus.paths,
    training.init_from) are relative to the file's folder; those from overrides, defaults,
    stdin or `base` to the working directory. The config returned holds them as absolute
    paths, so it means the same wherever it is written and read again (a run's config.yaml
    on --resume). `~` is expanded in those paths and in output.dir, which stays relative to
    the working directory. `check_corpus`: a corpus path that does not exist is a
    ConfigError naming what it was relative to, before any work starts.
    """
    raw: dict = {}
    origins: dict[str, str] = {}  # absolute corpus path -> how the user wrote it and where from
    if base is not None:
        raw = _copy_tree(base)
    if path is not None:
        raw = read_yaml_mapping(path)
        if str(path) != "-":
            folder = Path(os.path.abspath(Path(path).parent))
            _resolve_file_paths(raw, folder, origins, f"the config file's folder {folder}")
    for item in overrides:
        key, value = parse_override(item)
        _set_dotted(raw, key, value)
    config = config_from_dict(raw)
    cwd = os.getcwd()
    paths = []
    for p in config.corpus.paths:
        absolute = absolute_path(p, cwd)
        origins.setdefault(absolute, f"{p} (relative to the working directory {cwd})" if absolute != p else p)
        paths.append(absolute)
    init_from = config.training.init_from
    config = dataclasses.replace(
        config,
        corpus=dataclasses.replace(config.corpus, paths=tuple(paths)),
        training=dataclasses.replace(config.training, init_from=init_from and absolute_path(init_from, cwd)),
        output=dataclasses.replace(config.output, dir=os.path.expanduser(config.output.dir)))
    if check_corpus:
        for p in config.corpus.paths:
            if p != STDIN and not _has_glob(p) and not os.path.lexists(p):
                raise ConfigError(f"corpus path {origins.get(p, p)} does not exist; fix corpus.paths")
    return config


def _resolve_file_paths(raw: dict, folder: Path, origins: dict, where: str) -> None:
    """Make the paths a config file gives absolute, from the file's folder (types are checked later)."""
    corpus, training = raw.get("corpus"), raw.get("training")
    if isinstance(corpus, dict) and "paths" in corpus:
        given = corpus["paths"]
        items = given if isinstance(given, list) else [given]
        if all(isinstance(p, str) and p.strip() for p in items):
            resolved = [absolute_path(p, str(folder)) for p in items]
            for p, r in zip(items, resolved):
                origins[r] = f"{p} (relative to {where})" if r != p else p
            corpus["paths"] = resolved
    if isinstance(training, dict) and isinstance(training.get("init_from"), str) and training["init_from"]:
        training["init_from"] = absolute_path(training["init_from"], str(folder))


def absolute_path(path: str, folder: str) -> str:
    """`path` with ~ expanded, made absolute from `folder` (escaped when `path` is a glob);
    `-` (standard input) stays as it is."""
    if path == STDIN:
        return path
    path = os.path.expanduser(path)
    if os.path.isabs(path):
        return os.path.normpath(path)
    return os.path.normpath(os.path.join(glob.escape(folder) if _has_glob(path) else folder, path))


def _has_glob(path: str) -> bool:
    return any(c in path for c in "*?[")


def _copy_tree(tree: Any) -> Any:
    if isinstance(tree, dict):
        return {k: _copy_tree(v) for k, v in tree.items()}
    if isinstance(tree, list):
        return [_copy_tree(v) for v in tree]
    return tree


def read_yaml_mapping(path: str | Path) -> dict:
    """The YAML mapping in `path` ("-": stdin), read only if it is a regular file of at most
    MAX_CONFIG_BYTES: a FIFO is refused without being opened (opening one blocks), a device
    such as /dev/zero is never read."""
    name = "config file" if str(path) != "-" else "the config on stdin"
    if str(path) == "-":
        data = sys.stdin.buffer.read(MAX_CONFIG_BYTES + 1)
        if len(data) > MAX_CONFIG_BYTES:
            raise ConfigError(f"the config on stdin is larger than {MAX_CONFIG_BYTES:,} bytes; "
                              "a config is a short YAML file, pipe in the right one")
    else:
        path = Path(path)
        try:
            info = os.stat(path)
        except FileNotFoundError:
            raise ConfigError(f"config file {path} does not exist") from None
        except OSError as exc:
            raise ConfigError(f"config file {path} cannot be read: {exc.strerror}") from None
        if stat.S_ISDIR(info.st_mode):
            raise ConfigError(f"config path {path} is a directory, not a YAML file")
        if not stat.S_ISREG(info.st_mode):
            raise ConfigError(f"config path {path} is not a regular file ({file_kind(info.st_mode)}); "
                              "give a YAML file, or - to read the config from stdin")
        if info.st_size > MAX_CONFIG_BYTES:
            raise ConfigError(f"config file {path} is {info.st_size:,} bytes, more than a config's "
                              f"{MAX_CONFIG_BYTES:,}; give the YAML config file")
        try:
            with open(path, "rb") as handle:
                data = handle.read(MAX_CONFIG_BYTES + 1)
        except IsADirectoryError:
            raise ConfigError(f"config path {path} is a directory, not a YAML file") from None
        except OSError as exc:
            raise ConfigError(f"config file {path} cannot be read: {exc.strerror}") from None
        if len(data) > MAX_CONFIG_BYTES:  # it grew after the size check
            raise ConfigError(f"config file {path} is more than {MAX_CONFIG_BYTES:,} bytes; give the YAML config file")
        name = f"config file {path}"
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{name} is not UTF-8 text (byte {exc.start})") from None
    try:
        data = yaml.load(text, Loader=_StrictLoader)
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        line = f" at line {where.line + 1}" if where is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{name} is not valid YAML{line}: {problem}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{name} must be a mapping of sections "
                          f"(corpus:, model:, ...), not a {type(data).__name__}")
    return data


def file_kind(mode: int) -> str:
    """What a non-regular file is, for messages: "a FIFO", "a character device"."""
    for test, kind in ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"), (stat.S_ISDIR, "a directory")):
        if test(mode):
            return kind
    return "not a regular file"


class _StrictLoader(yaml.SafeLoader):
    """yaml.safe_load, except that a key given twice in one mapping is an error: PyYAML
    keeps the last value silently, so an edit further down a config could undo one above."""

    def construct_mapping(self, node, deep=False):
        seen: dict = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<:` may be overridden by the keys beside it
                continue
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            try:
                first = seen.get(key)
            except TypeError:  # an unhashable key: the base class reports it
                continue
            if first is not None:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} appears twice (lines {first} and {line}); keep one", key_node.start_mark)
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


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


def model_config_from_dict(raw: dict) -> ModelConfig:
    """The model section alone, checked as in a config file (keys named model.KEY)."""
    return _build(ModelConfig, raw, "model")


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
