"""`--format tflite`: one generation step as a LiteRT model, zipped with what an app needs to run it.

A whole textgen model does not convert with TFLite's built-in ops (its recurrent layers
become a TensorListReserve loop, a Select TF op), and an app needs the step anyway: it
feeds one token at a time and keeps the states between calls. So the exported model is the
step every generation loop of textgen calls (textgen.generation.steppers.make_stepper),
traced for one sample (batch 1) and converted with TFLITE_BUILTINS only:

    token int32 (1,), state_0 ... state_{n-1}  ->  logits float32 (1, vocab), state_0 ... state_{n-1}

Every state starts as zeros, and each output state_i is the next call's input state_i. The
zip holds the step model, the tokenizer and model card as JSON, `step.json` (the inputs and
outputs in order, the ids never to sample), a README.txt and `generate.py`
(textgen/export/litert_loop.py, copied as it is), a loop that needs only numpy and
`ai-edge-litert`. Sampling options (temperature, top-k) run in that loop, not in the model.

A conditioned model's label is its last state, the one that does not start as zeros: the
rows' label vector as the model's step keeps it (raw, or already multiplied by the first
layer's input kernel), which the step passes through unchanged. That state is linear in the
label weights, so the zip holds `label_states.npy`, one row per label of every group (the
flat order of textgen.labels), and step.json's `labels` says which state it is: the state
of weight row w is w @ label_states, for one label, several groups or a blend.
"""

from __future__ import annotations

import io
import json
import os
import zipfile
from importlib import resources
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

from textgen.data.tokenizer import tokenizer_from_config
from textgen.errors import ModelFileError, UsageError
from textgen.generation.steppers import make_stepper
from textgen.labels import LabelSpace
from textgen.models.architecture import model_kind
from textgen.models.layers import find_label_embedding, find_token_embedding
from textgen.files import create_file

SIGNATURE = "serving_default"
LOOP_FILE = "generate.py"
LABEL_FILE = "label_states.npy"


def export_tflite(model: keras.Model, output: Path) -> dict:
    """Write the zip `output` (which must not exist) and return what the CLI prints about it.

    Returns {"path", "bytes" (the zip's size), "tflite_bytes", "kind" (sequence, window or
    transformer), "states" (the state inputs' shapes, in input order), "labels" (step.json's,
    None for a model without labels)}. A model that is not
    textgen's, or whose step does not convert to built-in ops, is a ModelFileError; an
    existing `output` is a UsageError and stays as it was.
    """
    output = Path(output)
    if model_kind(model) == "seq2seq":
        raise UsageError("a seq2seq model cannot be exported as tflite yet; use --format saved_model")
    if os.path.lexists(output):
        raise _exists(output)
    embedding = find_token_embedding(model)
    if embedding is None or not embedding.tokenizer:
        raise ModelFileError(f"model {model.name} carries no tokenizer, so it is not a textgen model; "
                             "export a model trained with `textgen train`")
    tokenizer = tokenizer_from_config(embedding.tokenizer)
    step = StepFunction(model)
    tflite = convert(step)
    facts = step.facts(tokenizer)
    files = {"model.tflite": tflite,
             "tokenizer.json": _json(embedding.tokenizer),
             "model_card.json": _json(embedding.model_card),
             "step.json": _json(facts),
             "README.txt": readme(facts).encode("utf-8"),
             LOOP_FILE: loop_source()}
    if step.label_states is not None:
        files[LABEL_FILE] = _npy(step.label_states)
    data = _zip(files)
    create_file(output, data, _exists)
    return {"path": str(output), "bytes": len(data), "tflite_bytes": len(tflite), "kind": model_kind(model),
            "states": [spec["shape"] for spec in facts["inputs"][1:]], "labels": facts.get("labels")}


class StepFunction:
    """The model's generation step for one sample, with its states as separate named tensors.

    The states' nesting (per layer, per cache) is flattened in `tf.nest` order, which is the
    order of `state_0 ...`; `initial_states` must be zeros, which is what an app starts from,
    but for a conditioned model's label state, the last (`label_states` makes it).
    """

    def __init__(self, model: keras.Model):
        self.stepper = make_stepper(model)
        self.structure = self.stepper.initial_states(1)
        flat = tf.nest.flatten(self.structure)
        labels = find_label_embedding(model)
        self.label_space = None if labels is None else LabelSpace.from_card(labels.groups)
        if any(np.any(np.asarray(state)) for state in (flat if labels is None else flat[:-1])):
            raise ModelFileError(f"model {model.name} starts generation from states that are not zeros; "
                                 "the TFLite export supports textgen's own networks only")
        self.state_specs = [tf.TensorSpec(state.shape, state.dtype, name=f"state_{i}") for i, state in enumerate(flat)]
        self.vocab_size = find_token_embedding(model).input_dim
        # Row i: the label state of label i alone (one-hot weights), made by the stepper's own
        # initial_states from that label's vector, so the app needs no knowledge of the step.
        self.label_states = None if labels is None else np.asarray(tf.nest.flatten(
            self.stepper.initial_states(self.label_space.size, labels.embeddings.numpy().astype(np.float32)))[-1],
            np.float32)

    @property
    def output_names(self) -> list[str]:
        return ["logits"] + [spec.name for spec in self.state_specs]

    def __call__(self, token, *states):
        logits, new_states = self.stepper.step(token, tf.nest.pack_sequence_as(self.structure, list(states)))
        return (tf.cast(logits, tf.float32), *tf.nest.flatten(new_states))

    def frozen_function(self):
        """The step with every weight a constant, outputs named, traced for batch 1.

        The transformer and window steps read Keras variables inside a tf.cond or a
        tf.while_loop; the converter keeps such variables as resource reads that the
        interpreter cannot resolve, so they are made constants first (with TensorFlow's own
        freezing, which the converter uses on whole graphs too).
        """
        signature = [tf.TensorSpec([1], tf.int32, name="token"), *self.state_specs]
        traced = tf.function(self.__call__, input_signature=signature).get_concrete_function()
        frozen = convert_variables_to_constants_v2(traced)
        names = self.output_names

        def named(token, *states):
            return dict(zip(names, frozen(token, *states)))
        return tf.function(named, input_signature=signature).get_concrete_function()

    def facts(self, tokenizer) -> dict:
        """step.json: the inputs and outputs in order, the level, and the ids never to sample."""
        states = [_spec(spec.name, spec.shape, spec.dtype) for spec in self.state_specs]
        never = [] if tokenizer.unk_id is None else [tokenizer.unk_id]
        facts = {"signature": SIGNATURE, "level": tokenizer.level, "vocab_size": self.vocab_size,
                 "inputs": [_spec("token", [1], tf.int32), *states],
                 "outputs": [_spec("logits", [1, self.vocab_size], tf.float32), *states],
                 "never_sample": never}
        if self.label_space is not None:
            space = self.label_space
            facts["labels"] = {"groups": space.to_card(), "state": self.state_specs[-1].name, "table": LABEL_FILE,
                               "columns": [f"{g.name}={label}" for g in space.groups for label in g.labels],
                               "any": space.mix((), 1)[0][0]}
        return facts


def convert(step: StepFunction) -> bytes:
    """The step as a .tflite flatbuffer of built-in ops only; a ModelFileError names what does not convert."""
    module = tf.Module()
    module.step = step.frozen_function()
    converter = tf.lite.TFLiteConverter.from_concrete_functions([module.step], module)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]  # no Select TF ops, no custom ops
    try:
        return converter.convert()
    except Exception as exc:  # the converter raises ConverterError and others, with pages of MLIR
        first = next((line.strip() for line in str(exc).splitlines() if "error" in line.lower()), type(exc).__name__)
        raise ModelFileError(f"the generation step does not convert to built-in TFLite ops ({first[:200]}); "
                             "export it with --format saved_model instead") from None


def loop_source() -> bytes:
    """generate.py: the LiteRT loop (textgen/export/litert_loop.py), as shipped in the zip."""
    return resources.files("textgen.export").joinpath("litert_loop.py").read_bytes()


def readme(facts: dict) -> str:
    inputs = "\n".join(f"  {i}. {s['name']}: {s['dtype']} {s['shape']}" for i, s in enumerate(facts["inputs"]))
    outputs = "\n".join(f"  {i}. {s['name']}: {s['dtype']} {s['shape']}" for i, s in enumerate(facts["outputs"]))
    text = _README.format(inputs=inputs, outputs=outputs, level=facts["level"])
    if "labels" in facts:
        text += _LABELS_README.format(state=facts["labels"]["state"], table=facts["labels"]["table"],
                                      columns=", ".join(facts["labels"]["columns"]))
    return text


_README = """\
A textgen model exported for LiteRT (TensorFlow Lite): one generation step, batch 1.

Files
  model.tflite     the step: a token and the states in, the next token's logits and the states out
  tokenizer.json   textgen's tokenizer ({level} level): "vocabulary" lists the tokens, token id = position
  model_card.json  the model card: architecture, training config and history
  step.json        the inputs and outputs below, and "never_sample": ids a loop must never pick
  generate.py      a loop that runs the step with numpy and ai-edge-litert only
                   (pip install numpy ai-edge-litert; python generate.py THIS.zip --seed "Some text")

Inputs of signature "serving_default", in order
{inputs}
Outputs, in order
{outputs}

Start with every state zero. Feed the seed's tokens one call each, passing each call's
output states as the next call's input states; the logits of the last call give the first
new token. Pick a token (the largest logit, or a sample at a temperature), feed it, repeat.
"""

_LABELS_README = """
Labels
This model is conditioned on labels. Its last state, {state}, is the label and does
not start as zeros: it is w @ {table} (numpy.load), where w holds a weight
for every label of every group, in this order:
  {columns}
Each group's weights sum to 1: weight 1 on one label chooses it, weights such as 0.7 and
0.3 blend two, and a group you do not choose takes weight 1 on its "any" label. step.json's
"labels" lists the groups and the "any" row. generate.py takes --label NAME (or GROUP=NAME)
and --label-weights '[...]'.
"""


def _spec(name: str, shape, dtype) -> dict:
    return {"name": name, "shape": [int(d) for d in shape], "dtype": tf.as_dtype(dtype).name}


def _json(value) -> bytes:
    return json.dumps(value, indent=1, ensure_ascii=False).encode("utf-8")


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def _zip(files: dict[str, bytes]) -> bytes:
    """The zip's bytes: files readable by everyone when unpacked, with a fixed date, so the same
    model always gives the same zip."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in files.items():
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type, info.external_attr = zipfile.ZIP_DEFLATED, 0o644 << 16
            archive.writestr(info, data)
    return buffer.getvalue()


def _exists(path: Path) -> UsageError:
    return UsageError(f"{path} already exists and textgen never replaces it; give a new --output")
