"""Model construction: TokenEmbedding -> N x recurrent layer (+ dropout) -> Dense logits.

Each cell kind builds its own layer (textgen.models.cells), with the options for which
Keras picks the fused cuDNN kernel on a GPU where it has one; dropout is applied by
separate Dropout layers between the recurrent layers, which keeps that path open.
"""

from __future__ import annotations

import keras

from textgen.config import ModelConfig
from textgen.models import cells
from textgen.models.architecture import architecture_card, model_kind  # noqa: F401  (model_kind: for callers)
from textgen.models.fused_rnn import bidirectional
from textgen.labels import LabelSpace
from textgen.models.layers import LabelEmbedding, TokenEmbedding
from textgen.models.transformer import PositionEmbedding, TransformerBlock
from textgen.models.window import AttentionPooling, WindowFrames, WindowUnframe


def build_model(config: ModelConfig, tokenizer: dict, *, model_card: dict | None = None,
                l2: float = 0.0, fused_kernels: bool = False, labels: LabelSpace | None = None) -> keras.Model:
    """A functional model mapping int token ids (batch, time) to float32 logits (batch, time, vocab).

    Every architecture has this signature, so training, evaluation and saving treat them
    alike; `config.type` and `config.mode` choose what sits between the embedding and the
    logits (docs/architectures.md).
    With `labels` the model is conditioned: it takes `[token_ids, label_ids]`, label ids
    (batch, time, groups) as textgen.labels numbers them, and joins their learned vectors
    (LabelEmbedding) to every token's embedding as `label_merge` says; the card's `labels`
    entry holds the groups.
    `l2` adds an L2 penalty on the recurrent (or transformer) and output kernels to the
    training loss; the embedding is left out so a large word vocabulary keeps sparse gradients.
    `fused_kernels` builds the recurrent layers whose cell kind has a training twin as that
    twin, which trains through textgen's fused CPU kernel and computes the same function
    faster under mixed precision (textgen.models.fused_rnn).
    The model card gets the network's `architecture` (textgen.models.architecture).
    Layers follow the global mixed-precision policy; the logits are float32 regardless.
    """
    vocab_size = len(tokenizer["vocabulary"])
    penalty = keras.regularizers.L2(l2) if l2 else None
    ids = keras.Input(shape=(None,), dtype="int32", name="token_ids")
    card = {**(model_card or {}), "architecture": architecture_card(config)}
    if labels is not None:
        card["labels"] = labels.to_card()
    x = TokenEmbedding(vocab_size, config.embedding_dim, tokenizer=tokenizer, model_card=card,
                       name="token_embedding")(ids)
    if labels is not None:
        merge = label_merge(config)
        label_ids = keras.Input(shape=(None, len(labels.groups)), dtype="int32", name="label_ids")
        vectors = LabelEmbedding(labels.to_card(), config.embedding_dim, merge=merge, name="label_embedding")(label_ids)
        join = keras.layers.Concatenate(name="concat_labels") if merge == "concat" else keras.layers.Add(name="add_labels")
        x = join([x, vectors])
    inputs = ids if labels is None else [ids, label_ids]
    if config.type == "transformer" and config.positions == "learned":
        x = PositionEmbedding(config.context_length, config.embedding_dim, name="position_embedding")(x)
    embedding_dropout = config.dropout if config.embedding_dropout is None else config.embedding_dropout
    if embedding_dropout:
        x = keras.layers.Dropout(embedding_dropout, name="embedding_dropout")(x)
    if config.type == "transformer":
        return _transformer(config, inputs, x, vocab_size, penalty)
    if config.mode == "window":
        return _window_model(config, inputs, ids, x, vocab_size, penalty, fused_kernels)
    for i in range(config.layers):
        x = _recurrent_layer(config, i, penalty, fused_kernels, return_sequences=True)(x)
        if config.dropout:
            x = keras.layers.Dropout(config.dropout, name=f"dropout_{i + 1}")(x)
    # Logits stay float32 even under a mixed-precision policy, so the loss is computed in full precision.
    logits = keras.layers.Dense(vocab_size, dtype="float32", kernel_regularizer=penalty, name="logits")(x)
    return keras.Model(inputs, logits, name=f"textgen_{config.cell}")


def label_merge(config: ModelConfig) -> str:
    """How a conditioned model joins label vectors to token embeddings: model.label_merge, with
    auto resolved as measured (docs/conditioning.md): concatenated for recurrent layers (in
    sequence or window mode), whose input kernel then learns the label's own weights; added for
    a transformer, whose width is the embedding's."""
    if config.label_merge != "auto":
        return config.label_merge
    return "concat" if config.type == "rnn" else "add"


def _recurrent_layer(config: ModelConfig, i: int, penalty, fused_kernels: bool, return_sequences: bool):
    name = f"{config.cell}_{i + 1}"
    layer = cells.get(config.cell).build_layer(config.units, name=name, penalty=penalty,
                                               return_sequences=return_sequences, fused=fused_kernels)
    return bidirectional(layer, name=f"bidirectional_{name}") if config.bidirectional else layer


def _window_model(config: ModelConfig, inputs, ids, x, vocab_size: int, penalty, fused_kernels: bool) -> keras.Model:
    """Window mode: the logits at position t come from the `window` tokens up to t alone.

    Every position's window is cut out (WindowFrames) and run through `window_network`, a
    many-to-one model: recurrent layers (optionally bidirectional), then either the last
    output or textgenrnn's attention-weighted average over the outputs of every layer
    concatenated with the embedding (skip connections). Training on all positions at once
    costs `window` recurrent steps per predicted token, which is what window mode costs.
    """
    frames = keras.Input(shape=(config.window, x.shape[-1]), name="window")  # a concatenated label widens it
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
    return keras.Model(inputs, logits, name=f"textgen_{config.cell}_window")


def _transformer(config: ModelConfig, inputs, x, vocab_size: int, penalty) -> keras.Model:
    """A causal decoder: N pre-norm blocks of masked self-attention and MLP, a final norm, the logits."""
    mlp_dim = config.mlp_dim or 4 * config.embedding_dim
    window = config.context_length if config.positions == "rotary" else None
    for i in range(config.layers):
        x = TransformerBlock(config.heads, mlp_dim, dropout=config.dropout, kernel_regularizer=penalty, window=window,
                             name=f"block_{i + 1}")(x)
    x = keras.layers.LayerNormalization(epsilon=1e-5, name="final_norm")(x)
    logits = keras.layers.Dense(vocab_size, dtype="float32", kernel_regularizer=penalty, name="logits")(x)
    return keras.Model(inputs, logits, name="textgen_transformer")


def recurrent_layers(model: keras.Model) -> list:
    """The model's recurrent layers, input side first (a window model's nested network not included)."""
    return [layer for layer in model.layers if isinstance(layer, keras.layers.RNN)]


def architecture_summary(config: ModelConfig) -> str:
    """One line naming the network a model config builds: "lstm x 2, 512 units", "transformer ..."."""
    if config.type == "seq2seq":
        reads = "bidirectional " if config.bidirectional else ""
        attention = "no attention" if config.attention_type == "none" else f"{config.attention_type} attention"
        attention += f" with {config.attention_positions} position features" if config.attention_positions else ""
        return (f"seq2seq: {reads}{config.cell} encoder x {config.layers}, decoder x {config.decoder_layers}, "
                f"{config.units} units, {attention}")
    if config.type == "transformer":
        return (f"transformer, {config.layers} blocks x {config.heads} heads, width {config.embedding_dim}, "
                f"context {config.context_length}" + (", rotary positions" if config.positions == "rotary" else ""))
    shape = f"{config.cell} x {config.layers}, {config.units} units"
    if config.mode == "window":
        extras = [name for name in ("bidirectional", "attention") if getattr(config, name)]
        shape += f", window {config.window}" + "".join(f", {name}" for name in extras)
    return shape
