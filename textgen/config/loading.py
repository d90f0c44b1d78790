"""Reading a config: a YAML file (or stdin), --set overrides and the paths they name.

`load_config` is the one entry point: it finds the file (a path, or the name of a preset that
ships with textgen: `textgen.config.presets`), reads it strictly (a size cap, no FIFOs, no
duplicate keys, no Python tags), applies `KEY=VALUE` overrides, checks the result
through `textgen.config.coerce` and makes every corpus path absolute.
"""

from __future__ import annotations

import dataclasses
import glob
import os
import stat
import sys
import typing
from pathlib import Path
from typing import Any

import yaml

from textgen.config.coerce import config_from_dict
from textgen.config.presets import config_source
from textgen.config.schema import Config
from textgen.errors import ConfigError

MAX_CONFIG_BYTES = 1 << 20  # a config is a few hundred bytes; a larger input is the wrong file
STDIN = "-"  # the path that means standard input


def load_config(path: str | Path | None = None, overrides: typing.Iterable[str] = (), *,
                base: dict | None = None, check_corpus: bool = False) -> Config:
    """Read a YAML config (or start from `base`, else the defaults) and apply ``KEY=VALUE`` overrides.

    `path` "-" reads the config from stdin; a bare name that is not a file names a preset
    (`quick`: `textgen.config.presets`), an unknown one is a ConfigError listing them.
    Paths in a config file (corpus.paths, training.init_from) are relative to the file's
    folder; those from overrides, stdin or `base` to the working directory; the default
    corpus is the one that ships with textgen. The config returned holds them as absolute
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
        path = config_source(path)
        raw = read_yaml_mapping(path)
        if str(path) != "-":
            # The folder with its links resolved, as the OS resolves `..` through a linked folder:
            # a preset read as configs/quick.yaml (a link in the checkout) or by name names one corpus
            folder = Path(os.path.realpath(Path(path).parent))
            _resolve_file_paths(raw, folder, origins, f"the config file's folder {folder}")
    for item in overrides:
        key, value = parse_override(item)
        _set_dotted(raw, key, value)
    config = config_from_dict(raw)
    cwd = os.getcwd()
    paths, validation_paths = [], []
    for given, out in ((config.corpus.paths, paths), (config.corpus.validation_paths, validation_paths)):
        for p in given:
            absolute = absolute_path(p, cwd)
            origins.setdefault(absolute, f"{p} (relative to the working directory {cwd})" if absolute != p else p)
            out.append(absolute)
    init_from = config.training.init_from
    config = dataclasses.replace(
        config,
        corpus=dataclasses.replace(config.corpus, paths=tuple(paths), validation_paths=tuple(validation_paths)),
        training=dataclasses.replace(config.training, init_from=init_from and absolute_path(init_from, cwd)),
        output=dataclasses.replace(config.output, dir=os.path.expanduser(config.output.dir)))
    if check_corpus:
        for key in ("paths", "validation_paths"):
            for p in getattr(config.corpus, key):
                if p != STDIN and not _has_glob(p) and not os.path.lexists(p):
                    raise ConfigError(f"corpus path {origins.get(p, p)} does not exist; fix corpus.{key}")
    return config


def _resolve_file_paths(raw: dict, folder: Path, origins: dict, where: str) -> None:
    """Make the paths a config file gives absolute, from the file's folder (types are checked later)."""
    corpus, training = raw.get("corpus"), raw.get("training")
    for key in ("paths", "validation_paths"):
        if isinstance(corpus, dict) and key in corpus:
            given = corpus[key]
            items = given if isinstance(given, list) else [given]
            if all(isinstance(p, str) and p.strip() for p in items):
                resolved = [absolute_path(p, str(folder)) for p in items]
                for p, r in zip(items, resolved):
                    origins[r] = f"{p} (relative to {where})" if r != p else p
                corpus[key] = resolved
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
    if str(path) == "-":
        name = "the config on stdin"
        data = sys.stdin.buffer.read(MAX_CONFIG_BYTES + 1)
        if len(data) > MAX_CONFIG_BYTES:
            raise ConfigError(f"the config on stdin is larger than {MAX_CONFIG_BYTES:,} bytes; "
                              "a config is a short YAML file, pipe in the right one")
    else:
        name, data = f"config file {path}", _config_file_bytes(Path(path))
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{name} is not UTF-8 text (byte {exc.start})") from None
    try:
        tree = yaml.load(text, Loader=_StrictLoader)
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        line = f" at line {where.line + 1}" if where is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{name} is not valid YAML{line}: {problem}") from None
    if tree is None:
        return {}
    if not isinstance(tree, dict):
        raise ConfigError(f"{name} must be a mapping of sections "
                          f"(corpus:, model:, ...), not a {type(tree).__name__}")
    return tree


def _config_file_bytes(path: Path) -> bytes:
    """The bytes of a config file, refused unopened unless it is a regular file of a config's size."""
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
