"""Model construction: TokenEmbedding -> N x recurrent layer (+ dropout) -> Dense logits.

Layer options are left at the values for which Keras picks the fused cuDNN kernel on a GPU
(tanh/sigmoid activations, no recurrent dropout, no unroll, use_bias, GRU reset_after);
dropout is applied by separate Dropout layers between the recurrent layers, which keeps
that path open.
"""

from __future__ import annotations

import keras

from textgen.config import ModelConfig
from textgen.models.fused_rnn import FusedGRU, FusedLSTM
from textgen.models.cells import PeepholeLSTMCell
from textgen.models.layers import TokenEmbedding
from textgen.models.transformer import PositionEmbedding, TransformerBlock
from textgen.models.window import AttentionPooling, WindowFrames, WindowUnframe

_CELL_LAYERS = {
    "lstm": keras.layers.LSTM,
    "gru": keras.layers.GRU,
    "simple_rnn": keras.layers.SimpleRNN,
}
# Training twins with fused CPU kernels (textgen.models.fused_rnn); saved models hold the Keras classes.
_FUSED_LAYERS = {"lstm": FusedLSTM, "gru": FusedGRU}


def build_model(config: ModelConfig, tokenizer: dict, *, model_card: dict | None = None,
                l2: float = 0.0, fused_kernels: bool = False) -> keras.Model:
    """A functional model mapping int token ids (batch, time) to float32 logits (batch, time, vocab).

    Every architecture has this signature, so training, evaluation and saving treat them
    alike; `config.type` and `config.mode` choose what sits between the embedding and the
    logits (docs/architectures.md).
    `l2` adds an L2 penalty on the recurrent (or transformer) and output kernels to the
    training loss; the embedding is left out so a large word vocabulary keeps sparse gradients.
    `fused_kernels` builds LSTM and GRU layers that train through textgen's fused CPU kernels,
    which compute the same function faster under mixed precision (textgen.models.fused_rnn).
    Layers follow the global mixed-precision policy; the logits are float32 regardless.
    """
    vocab_size = len(tokenizer["vocabulary"])
    penalty = keras.regularizers.L2(l2) if l2 else None
    ids = keras.Input(shape=(None,), dtype="int32", name="token_ids")
    x = TokenEmbedding(vocab_size, config.embedding_dim, tokenizer=tokenizer,
                       model_card=model_card, name="token_embedding")(ids)
    if config.type == "transformer":
        x = PositionEmbedding(config.context_length, config.embedding_dim, name="position_embedding")(x)
    embedding_dropout = config.dropout if config.embedding_dropout is None else config.embedding_dropout
    if embedding_dropout:
        x = keras.layers.Dropout(embedding_dropout, name="embedding_dropout")(x)
    if config.type == "transformer":
        return _transformer(config, ids, x, vocab_size, penalty)
    if config.mode == "window":
        return _window_model(config, ids, x, vocab_size, penalty, fused_kernels)
    for i in range(config.layers):
        x = _recurrent_layer(config, i, penalty, fused_kernels, return_sequences=True)(x)
        if config.dropout:
            x = keras.layers.Dropout(config.dropout, name=f"dropout_{i + 1}")(x)
    # Logits stay float32 even under a mixed-precision policy, so the loss is computed in full precision.
    logits = keras.layers.Dense(vocab_size, dtype="float32", kernel_regularizer=penalty, name="logits")(x)
    return keras.Model(ids, logits, name=f"textgen_{config.cell}")


def _recurrent_layer(config: ModelConfig, i: int, penalty, fused_kernels: bool, return_sequences: bool):
    name = f"{config.cell}_{i + 1}"
    options = dict(return_sequences=return_sequences, kernel_regularizer=penalty, recurrent_regularizer=penalty)
    if config.cell == "peephole_lstm":
        cell = PeepholeLSTMCell(config.units, kernel_regularizer=penalty, recurrent_regularizer=penalty)
        layer = keras.layers.RNN(cell, return_sequences=return_sequences, name=name)
    else:
        # Bidirectional rebuilds its layer from a config, which the unregistered fused twins cannot
        # survive; their kernel runs forward in time only anyway.
        fused = fused_kernels and not config.bidirectional
        rnn_class = (_FUSED_LAYERS if fused else _CELL_LAYERS).get(config.cell, _CELL_LAYERS[config.cell])
        layer = rnn_class(config.units, name=name, **options)
    if config.bidirectional:
        return keras.layers.Bidirectional(layer, name=f"bidirectional_{name}")
    return layer


def _window_model(config: ModelConfig, ids, x, vocab_size: int, penalty, fused_kernels: bool) -> keras.Model:
    """Window mode: the logits at position t come from the `window` tokens up to t alone.

    Every position's window is cut out (WindowFrames) and run through `window_network`, a
    many-to-one model: recurrent layers (optionally bidirectional), then either the last
    output or textgenrnn's attention-weighted average over the outputs of every layer
    concatenated with the embedding (skip connections). Training on all positions at once
    costs `window` recurrent steps per predicted token, which is what window mode costs.
    """
    frames = keras.Input(shape=(config.window, config.embedding_dim), name="window")
    h, outputs = frames, [frames]
    for i in range(config.layers):
        last = i == config.layers - 1 and not config.attention
        h = _recurrent_layer(config, i, penalty, fused_kernels, return_sequences=not last)(h)
        if config.dropout:
            h = keras.layers.Dropout(config.dropout, name=f"dropout_{i + 1}")(h)
        outputs.append(h)
    if config.attention:
        h = keras.layers.Concatenate(name="skip_connections")(outputs)
        h = AttentionPooling(name="attention")(h)
    logits = keras.layers.Dense(vocab_size, dtype="float32", kernel_regularizer=penalty, name="logits")(h)
    network = keras.Model(frames, logits, name="window_network")
    framed = WindowFrames(config.window, name="window_frames")(x)
    logits = WindowUnframe(name="window_unframe")([network(framed), ids])
    return keras.Model(ids, logits, name=f"textgen_{config.cell}_window")


def _transformer(config: ModelConfig, ids, x, vocab_size: int, penalty) -> keras.Model:
    """A causal decoder: N pre-norm blocks of masked self-attention and MLP, a final norm, the logits."""
    mlp_dim = config.mlp_dim or 4 * config.embedding_dim
    for i in range(config.layers):
        x = TransformerBlock(config.heads, mlp_dim, dropout=config.dropout, kernel_regularizer=penalty,
                             name=f"block_{i + 1}")(x)
    x = keras.layers.LayerNormalization(epsilon=1e-5, name="final_norm")(x)
    logits = keras.layers.Dense(vocab_size, dtype="float32", kernel_regularizer=penalty, name="logits")(x)
    return keras.Model(ids, logits, name="textgen_transformer")


def recurrent_layers(model: keras.Model) -> list:
    """The model's recurrent layers, input side first (a window model's nested network not included)."""
    return [layer for layer in model.layers if isinstance(layer, keras.layers.RNN)]


def architecture_summary(config: ModelConfig) -> str:
    """One line naming the network a model config builds: "lstm x 2, 512 units", "transformer ..."."""
    if config.type == "transformer":
        return (f"transformer, {config.layers} blocks x {config.heads} heads, width {config.embedding_dim}, "
                f"context {config.context_length}")
    shape = f"{config.cell} x {config.layers}, {config.units} units"
    if config.mode == "window":
        extras = [name for name in ("bidirectional", "attention") if getattr(config, name)]
        shape += f", window {config.window}" + "".join(f", {name}" for name in extras)
    return shape


def model_kind(model: keras.Model) -> str:
    """sequence (recurrent, a prediction per step) | window | transformer."""
    names = {layer.name for layer in model.layers}
    if "window_network" in names:
        return "window"
    if any(isinstance(layer, TransformerBlock) for layer in model.layers):
        return "transformer"
    return "sequence"


def describe_model(model: keras.Model) -> dict:
    """Architecture facts for `textgen info`.

    `cell` names the recurrent cells; a window model's get " (window)" appended, so no one
    takes it for a sequence model.
    """
    kind = model_kind(model)
    facts = {"name": model.name, "type": "transformer" if kind == "transformer" else "rnn"}
    if kind == "transformer":
        blocks = [layer for layer in model.layers if isinstance(layer, TransformerBlock)]
        positions = model.get_layer("position_embedding")
        facts.update(cell="none", layers=len(blocks), units=[], heads=blocks[0].num_heads,
                     mlp_dim=blocks[0].mlp_dim, context_length=positions.max_length,
                     generation=f"cached keys and values up to {positions.max_length} tokens of context, "
                                f"then the last {positions.max_length} tokens re-fed for every new token")
    else:
        network = model.get_layer("window_network") if kind == "window" else model
        wrapped = [layer for layer in network.layers if isinstance(layer, (keras.layers.RNN, keras.layers.Bidirectional))]
        rnns = [getattr(layer, "forward_layer", layer) for layer in wrapped]
        cells = sorted({_cell_name(layer) for layer in rnns})
        facts.update(cell=", ".join(cells) if cells else "none", layers=len(rnns),
                     units=[layer.cell.units for layer in rnns], mode=kind)
        if kind == "window":
            window = model.get_layer("window_frames").window
            facts["cell"] += " (window)"
            facts.update(window=window,
                         bidirectional=any(isinstance(layer, keras.layers.Bidirectional) for layer in wrapped),
                         attention=any(isinstance(layer, AttentionPooling) for layer in network.layers),
                         generation=f"re-feeds the last {window} tokens through the network for every new token")
    facts["parameters"] = int(model.count_params())
    return facts


def _cell_name(layer) -> str:
    """LSTM, GRU, SimpleRNN, or the cell class of a generic RNN layer (PeepholeLSTMCell)."""
    return type(layer.cell).__name__ if type(layer) is keras.layers.RNN else type(layer).__name__
