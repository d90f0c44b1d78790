"""The sequence-to-sequence network: an encoder reads the source, a decoder writes the target
with teacher forcing, attention lets every decoder position look back at the source.

    source_ids -> source_embedding -> encoder_1..N (LSTM/GRU, Bidirectional optional; the
                  source mask keeps padding out) -> encoder outputs s_j, final states
    final states -> bridge (Dense tanh per state; only with a bidirectional encoder, whose
                  concatenated forward and backward states are twice the decoder's width)
    target_in  -> target_noise (in training only; model.target_noise) -> target_embedding
               -> decoder_1..M (LSTM/GRU; decoder_1 starts from the bridged encoder states, the
                  others from zeros: the encoder's last layer is the summary of the source, and
                  attention gives every layer's output the rest) -> h_t
    [h_t, s_j, mask] -> attention (SourceAttention, textgen.models.attention) -> c_t, weights
    tanh(W_c [c_t; h_t]) ("attentional") -> logits (float32)

With attention `none` the logits come from h_t directly. The recurrent layers keep the options
for which Keras picks cuDNN on a GPU (textgen.models.cells: tanh and sigmoid, no recurrent
dropout, no unroll, biases, GRU reset_after), and a right-padded mask, which cuDNN accepts.

`Seq2SeqParts` names the layers of a built (or loaded) model, and `encode` is the one encoder
pass: `build_seq2seq` calls it on symbolic inputs, textgen.generation.seq2seq on real batches,
so decoding cannot drift from training. Decoding steps the decoder's Keras cells and the same
attention layer (`decoder_step`).
"""

from __future__ import annotations

from dataclasses import dataclass

import keras

from textgen.config import ModelConfig
from textgen.data.pairs import RESERVED
from textgen.models import cells
from textgen.models.architecture import architecture_card
from textgen.models.attention import PaddingMask, SourceAttention, TokenNoise
from textgen.models.fused_rnn import bidirectional
from textgen.models.layers import TokenEmbedding

__all__ = ["Seq2SeqParts", "attention_model", "build_seq2seq", "decoder_step", "encode"]


def build_seq2seq(config: ModelConfig, source_tokenizer: dict, target_tokenizer: dict, *,
                  model_card: dict | None = None, fused_kernels: bool = False) -> keras.Model:
    """A functional model [source_ids (batch, S), target_in (batch, T)] int32 -> float32 logits
    (batch, T, target vocabulary + RESERVED); ids as textgen.data.pairs numbers them.

    `fused_kernels` builds the decoder's layers, and a bidirectional encoder's, as their training
    twins, which train through textgen's fused CPU kernel (textgen.models.fused_rnn) and compute
    the same function. A one-way encoder keeps Keras's layers: they carry their last output over
    the sources' padding, where the fused kernel (like Bidirectional's layers) writes zeros.
    """
    source_ids = keras.Input(shape=(None,), dtype="int32", name="source_ids")
    target_in = keras.Input(shape=(None,), dtype="int32", name="target_in")
    card = {**(model_card or {}), "architecture": architecture_card(config)}
    parts = _make_parts(config, len(source_tokenizer["vocabulary"]) + RESERVED,
                        len(target_tokenizer["vocabulary"]) + RESERVED, source_tokenizer, target_tokenizer, card,
                        fused_kernels)
    values, mask, states = encode(parts, source_ids)
    h = parts.target_embedding(parts.target_noise(target_in) if parts.target_noise is not None else target_in)
    for i, layer in enumerate(parts.decoder):
        h = layer(h, initial_state=states if i == 0 else None)
        if parts.decoder_dropout:
            h = parts.decoder_dropout[i](h)
    if parts.attention is not None:
        context, _ = parts.attention([h, values, mask])
        h = parts.attentional(parts.concatenate([context, h]))
    logits = parts.logits(h)
    return keras.Model([source_ids, target_in], logits, name=f"textgen_seq2seq_{config.cell}")


@dataclass
class Seq2SeqParts:
    """The layers of a seq2seq model, by role (None where the configuration has none)."""

    source_embedding: TokenEmbedding
    target_embedding: TokenEmbedding
    padding_mask: PaddingMask
    encoder: list  # recurrent layers (or Bidirectional wrappers), the last returning its states
    bridge: list  # Dense per decoder state, or [] when the encoder's states fit as they are
    bridge_concat: keras.layers.Concatenate | None  # joins a state's forward and backward halves
    decoder: list  # recurrent layers; the first starts from the bridged encoder states
    attention: SourceAttention | None
    concatenate: keras.layers.Concatenate | None
    attentional: keras.layers.Dense | None
    logits: keras.layers.Dense
    encoder_dropout: list  # a Dropout after each encoder layer, or [] (model.dropout 0)
    decoder_dropout: list  # the same after each decoder layer
    target_noise: TokenNoise | None  # model.target_noise: wrong previous tokens in training

    @classmethod
    def of(cls, model: keras.Model) -> "Seq2SeqParts":
        """The parts of a model `build_seq2seq` built, found by their names."""
        names = {layer.name: layer for layer in model.layers}

        def numbered(prefix):  # prefix_1, prefix_2, ... in order
            return [names[f"{prefix}_{i}"] for i in range(1, len(names) + 1) if f"{prefix}_{i}" in names]

        return cls(names["source_embedding"], names["target_embedding"], names["source_mask"], numbered("encoder"),
                   numbered("bridge"), names.get("bridge_concat"), numbered("decoder"), names.get("attention"),
                   names.get("concat_context"), names.get("attentional"), names["logits"],
                   numbered("encoder_dropout"), numbered("decoder_dropout"), names.get("target_noise"))

    @property
    def decoder_cells(self) -> list:
        return [layer.cell for layer in self.decoder]


def _make_parts(config: ModelConfig, source_vocab: int, target_vocab: int, source_tokenizer: dict,
                target_tokenizer: dict, card: dict, fused_kernels: bool = False) -> Seq2SeqParts:
    kind = cells.get(config.cell)  # keras LSTM / GRU (or their fused twins): their defaults keep cuDNN open

    def recurrent(name, return_state=False, fused=False):
        return kind.build_layer(config.units, name=name, return_state=return_state, fused=fused)

    def dropouts(side, n):
        return [keras.layers.Dropout(config.dropout, name=f"{side}_dropout_{i + 1}")
                for i in range(n)] if config.dropout else []

    encoder = []
    for i in range(config.layers):
        last = i == config.layers - 1
        if config.bidirectional:
            layer = recurrent(f"encoder_{i + 1}_forward", last, fused=fused_kernels)
            encoder.append(bidirectional(layer, name=f"encoder_{i + 1}"))
        else:  # its mask would repeat the last output over the padding: Keras's layer (build_seq2seq)
            encoder.append(recurrent(f"encoder_{i + 1}", last))
    n_states = 2 if config.cell == "lstm" else 1
    bridge = [keras.layers.Dense(config.units, activation="tanh", name=f"bridge_{i + 1}")
              for i in range(n_states)] if config.bidirectional else []
    attention = None if config.attention_type == "none" else SourceAttention(
        config.attention_type, units=config.units, window=config.attention_window,
        positions=config.attention_positions, name="attention")
    return Seq2SeqParts(
        source_embedding=TokenEmbedding(source_vocab, config.embedding_dim, tokenizer=source_tokenizer,
                                        model_card=card, mask_zero=False, name="source_embedding"),
        target_embedding=TokenEmbedding(target_vocab, config.embedding_dim, tokenizer=target_tokenizer,
                                        name="target_embedding"),
        padding_mask=PaddingMask(name="source_mask"),
        encoder=encoder, bridge=bridge,
        bridge_concat=keras.layers.Concatenate(name="bridge_concat") if bridge else None,
        decoder=[recurrent(f"decoder_{i + 1}", fused=fused_kernels) for i in range(config.decoder_layers)],
        attention=attention,
        concatenate=keras.layers.Concatenate(name="concat_context") if attention else None,
        attentional=keras.layers.Dense(config.units, activation="tanh", use_bias=False,
                                       name="attentional") if attention else None,
        # Logits stay float32 even under a mixed-precision policy, so the loss is computed in full precision.
        logits=keras.layers.Dense(target_vocab, dtype="float32", name="logits"),
        encoder_dropout=dropouts("encoder", config.layers), decoder_dropout=dropouts("decoder", config.decoder_layers),
        target_noise=TokenNoise(config.target_noise, RESERVED, target_vocab, name="target_noise")
        if config.target_noise else None)


def encode(parts: Seq2SeqParts, source_ids):
    """(encoder outputs (batch, S, width), source mask (batch, S), the decoder's first layer's
    initial states) for PAD-padded source ids; symbolic or real tensors alike."""
    mask = parts.padding_mask(source_ids)
    x = parts.source_embedding(source_ids)
    for i, layer in enumerate(parts.encoder):
        # Given the mask, a row's final states are those after its last real token, and padded
        # steps leave its states as they were: a row encodes the same, padded or not.
        x = layer(x, mask=mask)
        if i == len(parts.encoder) - 1:
            x, states = x[0], list(x[1:])
        if parts.encoder_dropout:
            x = parts.encoder_dropout[i](x)
    if parts.bridge:  # Bidirectional: forward states, then backward states, in the cell's order
        half = len(states) // 2
        states = [dense(parts.bridge_concat([states[k], states[half + k]]))
                  for k, dense in enumerate(parts.bridge)]
    return x, mask, states


def decoder_step(parts: Seq2SeqParts, token_ids, states: list, memory: tuple):
    """One decoder position for a batch: (float32 logits (batch, vocab), new states, attention
    weights (batch, S) or None).

    `states` holds each decoder layer's state list and, when the attention reads positions, the
    target position (batch,) int32 as a last one-entry list; `memory` is (values, keys, mask)
    from `encode` and `SourceAttention.keys`, computed once per source batch.
    """
    h = parts.target_embedding(token_ids)
    new_states = []
    for i, cell in enumerate(parts.decoder_cells):
        h, layer_states = cell(h, states[i])
        new_states.append(list(layer_states))
    weights = None
    if parts.attention is not None:
        values, keys, mask = memory
        position = None
        if parts.attention.positions:  # the target position, counted in the states' last entry
            position = states[-1][0]
            new_states.append([position + 1])
        context, weights = parts.attention.attend(h[:, None], keys, values, mask, position)
        h = parts.attentional(keras.ops.concatenate([context[:, 0], h], axis=-1))
        weights = weights[:, 0]
    return keras.ops.cast(parts.logits(h), "float32"), new_states, weights


def attention_model(model: keras.Model) -> keras.Model | None:
    """[source_ids, target_in] -> attention weights (batch, T, S), sharing `model`'s layers; None
    for a model without attention."""
    names = {layer.name for layer in model.layers}
    if "attention" not in names:
        return None
    return keras.Model(model.inputs, model.get_layer("attention").output[1], name="attention_weights")
