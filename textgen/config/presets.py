"""The presets and corpora that ship inside the package, found wherever textgen is installed.

textgen/presets/*.yaml are configs a user names on the command line (`--config quick`);
textgen/corpora/ holds the texts they and the default config train on. Both are package
data, located through `importlib.resources`, so they work from a wheel in any folder as
well as from the source checkout (whose top-level configs/ and corpora/ are links to them).
A preset names its corpus as ../corpora/FILE, relative to its own folder, which resolves the
same way in both places.

This module reads no config: `textgen.config.loading` asks `config_source` which file a
`--config` value means, and the schema asks `packaged_corpus` for its default corpus.
"""

from __future__ import annotations

import difflib
import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from textgen.errors import ConfigError

PRESET_SUFFIX = ".yaml"
_CONFIG_SUFFIXES = (".yaml", ".yml")


@dataclass(frozen=True)
class Preset:
    name: str  # what --config takes: the file name without .yaml
    description: str  # the first comment line of the file
    path: Path  # the installed file


def package_folder(name: str) -> Path:
    """The installed folder `name` inside the textgen package, as a file-system path.

    Training memory-maps and re-reads corpus files, so they must be real files: textgen is
    installed unzipped (a wheel, an editable install or the checkout), never run from a zip.
    """
    folder = resources.files("textgen") / name
    if not isinstance(folder, Path):
        raise ConfigError(f"textgen's {name}/ folder is not on the file system ({folder}); "
                          "install textgen with pip rather than running it from a zip archive")
    return folder


def packaged_corpus(file_name: str) -> str:
    """The absolute path of a corpus file shipped in textgen/corpora/ (whether or not it is installed)."""
    return str(package_folder("corpora") / file_name)


def list_presets() -> list[Preset]:
    """Every preset shipped with textgen, by name."""
    folder = package_folder("presets")
    files = folder.glob(f"*{PRESET_SUFFIX}") if folder.is_dir() else []
    return sorted((Preset(p.name[:-len(PRESET_SUFFIX)], _description(p), p) for p in files), key=lambda p: p.name)


def _description(path: Path) -> str:
    """The first comment line of a preset: its one-line summary."""
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            if line.startswith("#"):
                return line.lstrip("#").strip()
    return ""


def preset_names() -> list[str]:
    return [p.name for p in list_presets()]


def preset_path(name: str) -> Path:
    """The file of the preset called `name`; a ConfigError listing the presets if there is none."""
    for preset in list_presets():
        if preset.name == name:
            return preset.path
    raise ConfigError(f"no config file or preset named {name!r}{_did_you_mean(name)}; "
                      f"presets: {', '.join(preset_names()) or 'none installed'} (textgen presets describes them)")


def _did_you_mean(name: str) -> str:
    close = difflib.get_close_matches(name, preset_names(), n=1)
    return f" (did you mean {close[0]}?)" if close else ""


def looks_like_preset_name(value: str) -> bool:
    """A bare word such as `quick` or `shakespeare-fast`: no folder and no config suffix."""
    seps = {os.sep, os.altsep, "/"} - {None}
    return bool(value) and not any(s in value for s in seps) and not value.lower().endswith(_CONFIG_SUFFIXES)


def config_source(value: str | os.PathLike) -> str | Path:
    """The file a `--config` value means: `-` (stdin) as it is, a path that exists as it is, else
    the preset of that name. A file in the working directory wins over a preset, so a user's own
    `quick` is never shadowed; a folder never does, since it cannot be a config. A path that is
    not a bare name is left for the reader to report missing, with the preset to use instead
    when its name matches one (`configs/quick.yaml` from outside the checkout)."""
    text = os.fspath(value)
    if text == "-" or (os.path.lexists(text) and not os.path.isdir(text)):
        return value
    if looks_like_preset_name(text):
        if os.path.isdir(text) and text not in preset_names():
            return value  # the reader says it is a folder, not a config
        return preset_path(text)
    stem, suffix = os.path.splitext(os.path.basename(text))
    if not os.path.lexists(text) and suffix.lower() in _CONFIG_SUFFIXES and stem in preset_names():
        raise ConfigError(f"config file {text} does not exist; for the preset of that name pass --config {stem}")
    return value
