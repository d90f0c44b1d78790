"""Facts about a saved model, for `textgen info`."""

from __future__ import annotations

import math

import keras

from textgen.evaluation.metrics import bits, perplexity
from textgen.models.architecture import model_kind
from textgen.models.layers import find_token_embedding
from textgen.models.transformer import PositionEmbedding, TransformerBlock
from textgen.models.window import AttentionPooling, WindowFrames


def model_facts(model) -> dict:
    embedding = find_token_embedding(model)
    tokenizer, card = embedding.tokenizer, embedding.model_card
    arch = describe_model(model)
    history = card.get("history", {})
    level = tokenizer.get("level")
    facts = {
        "cell": arch["cell"],
        "layers": arch["layers"],
        "units": arch["units"],  # one entry per recurrent layer
        "embedding_dim": embedding.output_dim,
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
    for key in ("mode", "window", "bidirectional", "attention", "heads", "mlp_dim", "context_length"):
        if key in arch:
            facts[key] = arch[key]
    if "generation" in arch:  # window models re-feed their window per token; transformers past their context
        facts["generation"] = arch["generation"]
    options = {k: v for k, v in tokenizer.items() if k not in ("level", "vocabulary")}
    if options:  # word level: lowercase, max_vocab, min_count, pattern
        facts["tokenizer"] = options
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
    if history:  # model.keras holds an average of the weights (training.ema_momentum) or the weights as trained
        momentum = ((card.get("config") or {}).get("training") or {}).get("ema_momentum")
        facts["weights"] = f"averaged, ema_momentum {momentum}" if momentum else "as trained"
    if card.get("init_from"):
        facts["fine_tuned_from"] = card["init_from"].get("path")
    if card.get("config"):
        facts["config"] = card["config"]
    return facts


def describe_model(model: keras.Model) -> dict:
    """Architecture facts for `textgen info`: the kind from the model card, sizes from the layers.

    `cell` names the recurrent cells; a window model's get " (window)" appended, so no one
    takes it for a sequence model.
    """
    kind = model_kind(model)
    facts = {"name": model.name, "type": "transformer" if kind == "transformer" else "rnn"}
    if kind == "transformer":
        blocks = [layer for layer in model.layers if isinstance(layer, TransformerBlock)]
        context = _only(model, PositionEmbedding).max_length
        facts.update(cell="none", layers=len(blocks), units=[], heads=blocks[0].num_heads,
                     mlp_dim=blocks[0].mlp_dim, context_length=context,
                     generation=f"cached keys and values up to {context} tokens of context, "
                                f"then the last {context} tokens re-fed for every new token")
    else:
        network = _only(model, keras.Model) if kind == "window" else model
        wrapped = [layer for layer in network.layers if isinstance(layer, (keras.layers.RNN, keras.layers.Bidirectional))]
        rnns = [getattr(layer, "forward_layer", layer) for layer in wrapped]
        names = sorted({_cell_name(layer) for layer in rnns})
        facts.update(cell=", ".join(names) if names else "none", layers=len(rnns),
                     units=[layer.cell.units for layer in rnns], mode=kind)
        if kind == "window":
            window = _only(model, WindowFrames).window
            facts["cell"] += " (window)"
            facts.update(window=window,
                         bidirectional=any(isinstance(layer, keras.layers.Bidirectional) for layer in wrapped),
                         attention=any(isinstance(layer, AttentionPooling) for layer in network.layers),
                         generation=f"re-feeds the last {window} tokens through the network for every new token")
    facts["parameters"] = int(model.count_params())
    return facts


def _only(model, layer_class):
    return next(layer for layer in model.layers if isinstance(layer, layer_class))


def _cell_name(layer) -> str:
    """LSTM, GRU, SimpleRNN, or the cell class of a generic RNN layer (PeepholeLSTMCell)."""
    return type(layer.cell).__name__ if type(layer) is keras.layers.RNN else type(layer).__name__


def _rounded(value):
    return round(value, 4) if isinstance(value, float) else value
