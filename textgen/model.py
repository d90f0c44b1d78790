"""Model construction: TokenEmbedding -> N x recurrent layer (+ dropout) -> Dense logits.

Layer options are left at the values for which Keras picks the fused cuDNN kernel on a GPU
(tanh/sigmoid activations, no recurrent dropout, no unroll, use_bias, GRU reset_after);
dropout is applied by separate Dropout layers between the recurrent layers, which keeps
that path open.
"""

from __future__ import annotations

import keras

from textgen.config import ModelConfig
from textgen.fused_rnn import FusedGRU, FusedLSTM
from textgen.layers import TokenEmbedding

_CELL_LAYERS = {
    "lstm": keras.layers.LSTM,
    "gru": keras.layers.GRU,
    "simple_rnn": keras.layers.SimpleRNN,
}
# Training twins with fused CPU kernels (textgen.fused_rnn); saved models hold the Keras classes.
_FUSED_LAYERS = {"lstm": FusedLSTM, "gru": FusedGRU}


def build_model(config: ModelConfig, tokenizer: dict, *, model_card: dict | None = None,
                l2: float = 0.0, fused_kernels: bool = False) -> keras.Model:
    """A functional model mapping int token ids (batch, time) to float32 logits (batch, time, vocab).

    `l2` adds an L2 penalty on the recurrent and output kernels to the training loss; the
    embedding is left out so a large word vocabulary keeps sparse gradients.
    `fused_kernels` builds LSTM and GRU layers that train through textgen's fused CPU kernels,
    which compute the same function faster under mixed precision (textgen.fused_rnn).
    Layers follow the global mixed-precision policy; the logits are float32 regardless.
    """
    vocab_size = len(tokenizer["vocabulary"])
    penalty = keras.regularizers.L2(l2) if l2 else None
    ids = keras.Input(shape=(None,), dtype="int32", name="token_ids")
    x = TokenEmbedding(vocab_size, config.embedding_dim, tokenizer=tokenizer,
                       model_card=model_card, name="token_embedding")(ids)
    embedding_dropout = config.dropout if config.embedding_dropout is None else config.embedding_dropout
    if embedding_dropout:
        x = keras.layers.Dropout(embedding_dropout, name="embedding_dropout")(x)
    rnn_class = (_FUSED_LAYERS if fused_kernels else _CELL_LAYERS).get(config.cell, _CELL_LAYERS[config.cell])
    for i in range(config.layers):
        x = rnn_class(config.units, return_sequences=True, kernel_regularizer=penalty,
                      recurrent_regularizer=penalty, name=f"{config.cell}_{i + 1}")(x)
        if config.dropout:
            x = keras.layers.Dropout(config.dropout, name=f"dropout_{i + 1}")(x)
    # Logits stay float32 even under a mixed-precision policy, so the loss is computed in full precision.
    logits = keras.layers.Dense(vocab_size, dtype="float32", kernel_regularizer=penalty, name="logits")(x)
    return keras.Model(ids, logits, name=f"textgen_{config.cell}")


def recurrent_layers(model: keras.Model) -> list:
    """The model's recurrent layers, input side first."""
    return [layer for layer in model.layers if isinstance(layer, keras.layers.RNN)]


def describe_model(model: keras.Model) -> dict:
    """Architecture facts for `textgen info`."""
    rnns = recurrent_layers(model)
    cells = sorted({type(layer).__name__ for layer in rnns})
    return {
        "name": model.name,
        "cell": ", ".join(cells) if cells else "none",
        "layers": len(rnns),
        "units": [layer.cell.units for layer in rnns],
        "parameters": int(model.count_params()),
    }
