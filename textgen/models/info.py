"""Facts about a saved model, for `textgen info`.

The facts come from the model's serialised config (the JSON a .keras file holds) and its
parameter count, so a file is described without TensorFlow (`file_facts`, through
textgen.model_file) and a model in memory the same way (`model_facts`, which serialises it
first): one description, whichever way the model arrives.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from textgen.evaluation.metrics import bits, perplexity
from textgen.models.architecture import kind_of
from textgen.model_file import NeedsKeras, layers, model_card, read_model_file, token_embedding

# Keras's recurrent layer classes; a saved model holds these, never textgen's training twins.
_RECURRENT = ("RNN", "LSTM", "GRU", "SimpleRNN")


def file_facts(path: str | Path) -> dict:
    """The facts about the model in `path`, read from its JSON and weights' shapes without Keras.

    A ModelFileError for a damaged or foreign file; textgen.model_file.NeedsKeras for one only
    Keras can judge (the caller then loads it and describes the model).
    """
    stored = read_model_file(path)
    try:
        return facts_from_config(stored.config, stored.parameters)
    except (KeyError, IndexError, TypeError, AttributeError, StopIteration) as exc:  # not as textgen writes it
        raise NeedsKeras(f"{path}: unexpected layout ({exc!r})") from None


def model_facts(model) -> dict:
    """The facts about a Keras model built or loaded by textgen."""
    return facts_from_config(_serialised(model), int(model.count_params()))


def describe_model(model) -> dict:
    """Architecture facts about a Keras model (see `describe_config`)."""
    return describe_config(_serialised(model), int(model.count_params()))


def _serialised(model) -> dict:
    """The model's config as its .keras file would hold it (training twins as their Keras layers)."""
    import keras

    from textgen.saving import inference_config

    return json.loads(json.dumps(inference_config(keras.saving.serialize_keras_object(model))))


def facts_from_config(config: dict, parameters: int) -> dict:
    """Everything `textgen info` shows, from a serialised textgen model and its parameter count."""
    embedding = token_embedding(config)
    tokenizer, card = embedding.get("tokenizer") or {}, model_card(embedding)
    arch = describe_config(config, parameters)
    level = tokenizer.get("level")
    facts = {
        "cell": arch["cell"],
        "layers": arch["layers"],
        "units": arch["units"],  # one entry per recurrent layer
        "embedding_dim": embedding["output_dim"],
        "parameters": arch["parameters"],
        "type": arch["type"],
        "level": level,
        "vocabulary_size": len(tokenizer.get("vocabulary", [])),
        "coverage": _rounded(card.get("coverage")),  # share of corpus tokens in the vocabulary
        "format_version": card.get("format_version"),
        "textgen_version": card.get("textgen_version"),
    }
    if arch["type"] == "transformer":  # blocks, not recurrent cells
        del facts["cell"], facts["units"]
    if arch["type"] == "seq2seq":  # the source's vocabulary above; the target's may be another
        target = next(layer for layer in layers(config) if layer["config"].get("name") == "target_embedding")
        facts["target_vocabulary_size"] = len(target["config"]["tokenizer"].get("vocabulary", []))
        del facts["coverage"]  # a corpus's share of known tokens: pairs have a vocabulary fitted on all of them
        facts["same_letters"] = bool(((card.get("config") or {}).get("model") or {}).get("same_letters", False))
    if card.get("labels"):  # a conditioned model: its label groups, as `generate --label` names them
        facts["labels"] = card["labels"]
    for key in ("mode", "window", "bidirectional", "attention", "heads", "mlp_dim", "context_length", "positions",
                "decoder_layers", "attention_type", "attention_window", "attention_positions"):
        if key in arch:
            facts[key] = arch[key]
    if "generation" in arch:  # window models re-feed their window per token; transformers past their context
        facts["generation"] = arch["generation"]
    options = {k: v for k, v in tokenizer.items() if k not in ("level", "vocabulary")}
    if options:  # word level: lowercase, max_vocab, min_count, pattern
        facts["tokenizer"] = options
    facts.update(_training_facts(card, level))
    return facts


def _training_facts(card: dict, level: str) -> dict:
    """Losses, epochs and the weights' origin, from the model card's history (none for an untrained model)."""
    history = card.get("history", {})
    facts = {}
    validated = history.get("final_val_loss") is not None  # without validation text the best loss is training's
    for key, name in (("final_loss", "final_train_loss"), ("final_val_loss", "final_validation_loss"),
                      ("best_loss", "best_validation_loss" if validated else "best_train_loss")):
        value = history.get(key)
        if value is not None and math.isfinite(value):
            facts[name] = round(value, 4)
            if level == "char":
                facts[name.replace("loss", "bits_per_char")] = round(bits(value), 4)
            else:
                facts[name.replace("loss", "perplexity")] = round(perplexity(value), 2)
    if history:
        facts["epochs_trained"] = history.get("epochs")
        facts["best_epoch"] = history.get("best_epoch")
        if history.get("best_step") is not None:  # a time budget's weights, part-way through an epoch
            facts["best_step"] = history["best_step"]
        facts["seconds_trained"] = history.get("seconds")
        if history.get("stopped"):
            facts["stopped_by"] = history["stopped"]  # completed | early_stopping | time_limit | interrupt
        # model.keras holds an average of the weights (training.ema_momentum) or the weights as trained
        momentum = ((card.get("config") or {}).get("training") or {}).get("ema_momentum")
        facts["weights"] = f"averaged, ema_momentum {momentum}" if momentum else "as trained"
    if card.get("init_from"):
        facts["fine_tuned_from"] = card["init_from"].get("path")
    if card.get("config"):
        facts["config"] = card["config"]
    return facts


def describe_config(config: dict, parameters: int) -> dict:
    """Architecture facts: the kind from the model card, sizes from the serialised layers.

    `cell` names the recurrent cells; a window model's get " (window)" appended, so no one
    takes it for a sequence model.
    """
    kind = _kind(config)
    facts = {"name": config["config"]["name"], "type": kind if kind in ("transformer", "seq2seq") else "rnn"}
    if kind == "seq2seq":  # its card's architecture says it all; units: the encoder's layers, then the decoder's
        found = model_card(token_embedding(config)).get("architecture")
        facts.update(cell=found["cell"], layers=found["layers"], decoder_layers=found["decoder_layers"],
                     units=[found["units"]] * (found["layers"] + found["decoder_layers"]),
                     bidirectional=found["bidirectional"], attention_type=found["attention_type"])
        if found["attention_type"] == "local":
            facts["attention_window"] = found["attention_window"]
        if found.get("attention_positions"):  # absent from the cards of files saved before the key existed
            facts["attention_positions"] = found["attention_positions"]
    elif kind == "transformer":
        blocks = _textgen_layers(config, "TransformerBlock")
        window = blocks[0].get("window")  # rotary positions; absent from files saved before they existed
        context = window or _textgen_layers(config, "PositionEmbedding")[0]["max_length"]
        generation = (f"cached keys and values of the last {context} tokens (rotary positions), one position a token"
                      if window else f"cached keys and values up to {context} tokens of context, "
                                     f"then the last {context} tokens re-fed for every new token")
        facts.update(cell="none", layers=len(blocks), units=[], heads=blocks[0]["num_heads"],
                     mlp_dim=blocks[0]["mlp_dim"], context_length=context, positions="rotary" if window else "learned",
                     generation=generation)
    else:
        network = next(layer for layer in layers(config) if layers(layer)) if kind == "window" else config
        wrapped = [layer for layer in layers(network) if layer["class_name"] in (*_RECURRENT, "Bidirectional")]
        rnns = [layer["config"]["layer"] if layer["class_name"] == "Bidirectional" else layer for layer in wrapped]
        names = sorted({_cell_name(layer) for layer in rnns})
        facts.update(cell=", ".join(names) if names else "none", layers=len(rnns),
                     units=[_units(layer) for layer in rnns], mode=kind)
        if kind == "window":
            window = _textgen_layers(config, "WindowFrames")[0]["window"]
            facts["cell"] += " (window)"
            facts.update(window=window, bidirectional=any(layer["class_name"] == "Bidirectional" for layer in wrapped),
                         attention=bool(_textgen_layers(network, "AttentionPooling")),
                         generation=f"re-feeds the last {window} tokens through the network for every new token")
    facts["parameters"] = parameters
    return facts


def _kind(config: dict) -> str:
    """sequence | window | transformer | seq2seq: the card's architecture, or for a file without one, its layers'."""
    found = model_card(token_embedding(config) or {}).get("architecture")
    if found:
        return kind_of(found)
    if _textgen_layers(config, "TransformerBlock"):
        return "transformer"
    return "window" if _textgen_layers(config, "WindowFrames") else "sequence"


def _textgen_layers(config: dict, name: str) -> list[dict]:
    """The configs of the textgen layers of class `name` at the model's top level."""
    return [layer["config"] for layer in layers(config) if layer.get("registered_name") == f"textgen>{name}"]


def _cell_name(layer: dict) -> str:
    """LSTM, GRU, SimpleRNN, or the cell class of a generic RNN layer (PeepholeLSTMCell)."""
    return layer["config"]["cell"]["class_name"] if layer["class_name"] == "RNN" else layer["class_name"]


def _units(layer: dict) -> int:
    return (layer["config"]["cell"]["config"] if layer["class_name"] == "RNN" else layer["config"])["units"]


def _rounded(value):
    return round(value, 4) if isinstance(value, float) else value
