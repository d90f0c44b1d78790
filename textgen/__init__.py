"""textgen: train character- and word-level text generators and sample from one .keras file.

Importing the package registers textgen's Keras objects, so a plain
``keras.models.load_model(path)`` works after ``import textgen``.
"""

import os as _os

__version__ = "0.1.0"


def _import_tensorflow_quietly() -> None:
    """Import TensorFlow with its C++ start-up lines hidden.

    TensorFlow writes oneDNN and CUDA notices to file descriptor 2 while it is imported,
    through absl logging that ignores TF_CPP_MIN_LOG_LEVEL. They are noise to users, so unless
    the user chose a log level (TF_CPP_MIN_LOG_LEVEL set, as `textgen --verbose` does) the
    import runs with descriptor 2 pointed at /dev/null. Python errors still surface as
    exceptions after the descriptor is restored.
    """
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


def _abort_quietly_while_importing() -> None:
    """Run as the `textgen` command (or `python -m textgen`), exit on Ctrl-C during the imports
    as click does later.

    TensorFlow takes seconds to import, before click can catch anything, and a Ctrl-C then
    would print a traceback of TensorFlow's internals. `textgen.cli.main` puts Python's own
    handler back once the imports are done. Imported as a library, textgen leaves SIGINT alone.
    """
    import signal
    import sys

    def abort(signum, frame):
        raise SystemExit("\nAborted!")  # printed on the way out, after stderr is restored; exit code 1

    command = sys.argv[:1] and _os.path.basename(sys.argv[0]) in ("textgen", "textgen.exe")
    run_as_module = "-m" in sys.orig_argv[:-1] and sys.orig_argv[sys.orig_argv.index("-m") + 1] == "textgen"
    if command or run_as_module:
        signal.signal(signal.SIGINT, abort)


_abort_quietly_while_importing()
_import_tensorflow_quietly()

from textgen.layers import TokenEmbedding  # noqa: E402  (registers custom Keras objects)
from textgen.generate import Generator, load  # noqa: E402

__all__ = ["Generator", "TokenEmbedding", "load", "__version__"]
