"""Which network a model is: written in its model card when it is built, read back when it is loaded.

`build_model` writes the card's `architecture` from the ModelConfig, e.g.

    {"type": "rnn", "mode": "sequence", "cell": "gru", "layers": 2, "units": 512, "embedding_dim": 256}

(window mode adds window, bidirectional and attention; a transformer has layers, heads,
mlp_dim and context_length instead of the recurrent keys), and training's card carries the
same entry into every model file it saves. Generation, evaluation and `textgen info` read it
through `architecture(model)`. Files saved before the card held it are described by
`_legacy_architecture`, from the classes of their layers.

Keras is imported by the functions that take a model: checking a card's entry
(`architecture_problem`, for `textgen info` on a file) needs no TensorFlow.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from textgen.config import MODEL_TYPES, MODES, ModelConfig
from textgen.models import cells

if TYPE_CHECKING:
    import keras

_WINDOW_KEYS = ("window", "bidirectional", "attention")
_RNN_KEYS = ("cell", "layers", "units", "embedding_dim")
_TRANSFORMER_KEYS = ("layers", "embedding_dim", "heads", "mlp_dim", "context_length", "positions")
_SEQ2SEQ_KEYS = ("cell", "layers", "decoder_layers", "units", "embedding_dim", "bidirectional", "attention_type",
                 "attention_window", "attention_positions")


def architecture_card(config: ModelConfig) -> dict:
    """The model card's `architecture` entry for a network built from `config`."""
    if config.type == "seq2seq":
        return {"type": "seq2seq", **{key: getattr(config, key) for key in _SEQ2SEQ_KEYS}}
    if config.type == "transformer":
        keys = {key: getattr(config, key) for key in _TRANSFORMER_KEYS}
        return {"type": "transformer", **keys, "mlp_dim": config.mlp_dim or 4 * config.embedding_dim}
    card = {"type": "rnn", "mode": config.mode, **{key: getattr(config, key) for key in _RNN_KEYS}}
    if config.mode == "window":
        card.update({key: getattr(config, key) for key in _WINDOW_KEYS})
    return card


def architecture(model: keras.Model) -> dict:
    """The model's architecture: its model card's entry, or where the card has none, what its layers show."""
    from textgen.models.layers import find_token_embedding

    embedding = find_token_embedding(model)
    card = embedding.model_card.get("architecture") if embedding is not None else None
    return card if card else _legacy_architecture(model)


def model_kind(model: keras.Model) -> str:
    """sequence (recurrent, a prediction per step) | window | transformer | seq2seq."""
    return kind_of(architecture(model))


def kind_of(facts: dict) -> str:
    """The kind an architecture entry (`architecture_card`'s) describes: sequence | window | transformer | seq2seq."""
    return facts["type"] if facts["type"] in ("transformer", "seq2seq") else facts["mode"]


def architecture_problem(facts) -> str | None:
    """What is wrong with a model card's `architecture` entry, or None (checked when a file loads)."""
    if not isinstance(facts, dict):
        return f"architecture is {facts!r}, not a mapping"
    kind = facts.get("type")
    if kind not in MODEL_TYPES:
        return f"architecture.type is {kind!r}, not one of {', '.join(MODEL_TYPES)}"
    if kind == "rnn":
        if facts.get("mode") not in MODES:
            return f"architecture.mode is {facts.get('mode')!r}, not one of {', '.join(MODES)}"
        if facts.get("cell") not in cells.names():
            return f"architecture.cell is {facts.get('cell')!r}, not one of {', '.join(cells.names())}"
    if kind == "seq2seq" and facts.get("cell") not in ("lstm", "gru"):
        return f"architecture.cell is {facts.get('cell')!r}, not lstm or gru"
    for key in ("layers", "units", "embedding_dim", "window", "heads", "mlp_dim", "context_length", "decoder_layers",
                "attention_window"):
        value = facts.get(key)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
            return f"architecture.{key} is {value!r}, not a whole number of 1 or more"
    return None


def _legacy_architecture(model: keras.Model) -> dict:
    """The architecture of a model whose card does not say, from the classes of its layers."""
    import keras

    from textgen.models.layers import find_token_embedding
    from textgen.models.transformer import PositionEmbedding, TransformerBlock
    from textgen.models.window import AttentionPooling, WindowFrames

    embedding = find_token_embedding(model)
    width = embedding.output_dim if embedding is not None else None
    blocks = [layer for layer in model.layers if isinstance(layer, TransformerBlock)]
    if blocks:
        window = blocks[0].window  # rotary positions: the blocks hold the context
        context = window or next(layer for layer in model.layers if isinstance(layer, PositionEmbedding)).max_length
        return {"type": "transformer", "layers": len(blocks), "embedding_dim": width, "heads": blocks[0].num_heads,
                "mlp_dim": blocks[0].mlp_dim, "context_length": context, "positions": "rotary" if window else "learned"}
    frames = [layer for layer in model.layers if isinstance(layer, WindowFrames)]
    network = next((layer for layer in model.layers if isinstance(layer, keras.Model)), model) if frames else model
    wrapped = [layer for layer in network.layers if isinstance(layer, (keras.layers.RNN, keras.layers.Bidirectional))]
    rnns = [getattr(layer, "forward_layer", layer) for layer in wrapped]
    kind = cells.for_cell(rnns[0].cell) if rnns else None
    facts = {"type": "rnn", "mode": "window" if frames else "sequence", "cell": kind.name if kind else None,
             "layers": len(rnns), "units": rnns[0].cell.units if rnns else None, "embedding_dim": width}
    if frames:
        facts.update(window=frames[0].window,
                     bidirectional=any(isinstance(layer, keras.layers.Bidirectional) for layer in wrapped),
                     attention=any(isinstance(layer, AttentionPooling) for layer in network.layers))
    return facts
