"""textgen: train character- and word-level text generators and sample from one .keras file.

Importing the package registers textgen's Keras objects, so a plain
``keras.models.load_model(path)`` works after ``import textgen``; it changes nothing else in
the importing process (no environment variables, no redirected streams, no logger levels).
The one exception to the eager import is the `textgen` command itself (`textgen.cli`),
which defers it until a command has parsed its arguments, so that `--help` and usage errors
answer at once instead of after TensorFlow's seconds of import; the command also quiets
TensorFlow's start-up lines, which a library must leave to its caller.
"""

import os as _os
import sys as _sys

__version__ = "0.1.0"


def load_keras_objects() -> None:
    """Import TensorFlow and register textgen's Keras objects. Calling it again does nothing."""
    import textgen.generation.generate  # noqa: F401  (imports every module that defines a Keras object)
    import textgen.models.layers  # noqa: F401


def _run_as_command() -> bool:
    """Whether this process is the `textgen` command (or `python -m textgen`)."""
    if _sys.argv[:1] and _os.path.basename(_sys.argv[0]) in ("textgen", "textgen.exe"):
        return True
    argv = _sys.orig_argv
    return "-m" in argv[:-1] and argv[argv.index("-m") + 1] == "textgen"


_DEFERRED = {"Generator": "textgen.generation.generate", "load": "textgen.generation.generate",
             "TokenEmbedding": "textgen.models.layers"}


def __getattr__(name):
    """The public names, for the command line's process, which imports them on first use."""
    if name not in _DEFERRED:
        raise AttributeError(f"module 'textgen' has no attribute {name!r}")
    import importlib

    load_keras_objects()
    return getattr(importlib.import_module(_DEFERRED[name]), name)


if not _run_as_command():
    from textgen.generation.generate import Generator, load  # noqa: E402
    from textgen.models.layers import TokenEmbedding  # noqa: E402

__all__ = ["Generator", "TokenEmbedding", "load", "load_keras_objects", "__version__"]
