"""textgen: train character- and word-level text generators and sample from one .keras file.

Importing the package registers textgen's Keras objects, so a plain
``keras.models.load_model(path)`` works after ``import textgen``. The one exception is the
`textgen` command itself (`textgen.cli.main`), which defers that until a command runs, so that
`--help` and usage errors answer at once instead of after TensorFlow's seconds of import.
"""

import os as _os
import sys as _sys

__version__ = "0.1.0"


def _import_tensorflow_quietly() -> None:
    """Import TensorFlow with its C++ start-up lines hidden.

    TensorFlow writes oneDNN and CUDA notices to file descriptor 2 while it is imported,
    through absl logging that ignores TF_CPP_MIN_LOG_LEVEL. They are noise to users, so unless
    the user chose a log level (TF_CPP_MIN_LOG_LEVEL set, as `textgen --verbose` does) the
    import runs with descriptor 2 pointed at /dev/null. Python errors still surface as
    exceptions after the descriptor is restored.
    """
    if "tensorflow" in _sys.modules:
        return
    if "TF_CPP_MIN_LOG_LEVEL" in _os.environ and "TEXTGEN_QUIETED_TF" not in _os.environ:
        return  # the user chose a level (a child process of ours inherits both variables)
    _os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    _os.environ["TEXTGEN_QUIETED_TF"] = "1"
    saved, devnull = _os.dup(2), _os.open(_os.devnull, _os.O_WRONLY)
    try:
        _os.dup2(devnull, 2)
        import tensorflow

        tensorflow.config.list_physical_devices()  # device probing logs (cuInit) happen here too
    finally:
        _os.dup2(saved, 2)
        _os.close(saved)
        _os.close(devnull)


def load_keras_objects(*, verbose: bool = False) -> None:
    """Import TensorFlow (quietly unless `verbose`) and register textgen's Keras objects.

    Importing the package does this; the command line calls it once a command has parsed its
    arguments. Calling it again does nothing.
    """
    if verbose and "tensorflow" not in _sys.modules:
        _os.environ.pop("TEXTGEN_QUIETED_TF", None)
        _os.environ["TF_CPP_MIN_LOG_LEVEL"] = "0"  # TensorFlow's own default: show its start-up lines
    _import_tensorflow_quietly()
    import textgen.generation.generate  # noqa: F401  (imports every module that defines a Keras object)
    import textgen.models.layers  # noqa: F401


def _run_as_command() -> bool:
    """Whether this process is the `textgen` command (or `python -m textgen`)."""
    if _sys.argv[:1] and _os.path.basename(_sys.argv[0]) in ("textgen", "textgen.exe"):
        return True
    argv = _sys.orig_argv
    return "-m" in argv[:-1] and argv[argv.index("-m") + 1] == "textgen"


_DEFERRED = {"Generator": "textgen.generation.generate", "load": "textgen.generation.generate", "TokenEmbedding": "textgen.models.layers"}


def __getattr__(name):
    """The public names, for the command line's process, which imports them on first use."""
    if name not in _DEFERRED:
        raise AttributeError(f"module 'textgen' has no attribute {name!r}")
    import importlib

    load_keras_objects()
    return getattr(importlib.import_module(_DEFERRED[name]), name)


if not _run_as_command():
    load_keras_objects()
    from textgen.generation.generate import Generator, load  # noqa: E402
    from textgen.models.layers import TokenEmbedding  # noqa: E402

__all__ = ["Generator", "TokenEmbedding", "load", "load_keras_objects", "__version__"]
