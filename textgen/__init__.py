"""textgen: train character- and word-level text generators and sample from one .keras file.

`import textgen` is quick: TensorFlow is imported when something needs it, not before. The
public names (`train`, `load`, `Generator`, `TokenEmbedding`, `load_config`) resolve on first
use (PEP 562 `__getattr__`); all but `load_config` import TensorFlow then and register
textgen's Keras objects, so `textgen.load(path)` works after a plain `import textgen`, and so do the configuration, the
tokenizers and reading a model file's card (`textgen info`) without TensorFlow at all.

A plain ``keras.models.load_model(path)`` needs textgen's Keras objects registered. When
Keras or TensorFlow is already imported (``import keras, textgen``), the import registers
them at once, since TensorFlow's cost is paid; in any other order ``textgen.load_keras_objects()``
is the one line that does it. Importing changes nothing else in the importing process (no
environment variables, no redirected streams, no logger levels): quieting TensorFlow's
start-up lines is the `textgen` command's business (`textgen.cli.quiet`), not a library's.
"""

import sys as _sys

__version__ = "0.1.0"


def load_keras_objects() -> None:
    """Import TensorFlow and register textgen's Keras objects. Calling it again does nothing."""
    import textgen.generation.generate  # noqa: F401  (imports every module that defines a Keras object)
    import textgen.models.layers  # noqa: F401
    import textgen.models.seq2seq  # noqa: F401  (seq2seq's attention and mask layers)


# Public name -> the module defining it, imported on first use; all but the config's need TensorFlow.
_LAZY = {"Generator": "textgen.generation.generate", "load": "textgen.generation.generate",
         "TokenEmbedding": "textgen.models.layers", "train": "textgen.training.train",
         "load_config": "textgen.config"}
_WITHOUT_TENSORFLOW = {"load_config"}


def __getattr__(name):
    if name not in _LAZY:
        raise AttributeError(f"module 'textgen' has no attribute {name!r}")
    import importlib

    if name not in _WITHOUT_TENSORFLOW:
        load_keras_objects()
    return getattr(importlib.import_module(_LAZY[name]), name)


def __dir__():
    return sorted(set(globals()) | set(_LAZY))


if "keras" in _sys.modules or "tensorflow" in _sys.modules:
    load_keras_objects()  # the plain-Keras path: `import keras, textgen; keras.models.load_model(path)`

__all__ = ["Generator", "TokenEmbedding", "load", "load_config", "load_keras_objects", "train", "__version__"]
