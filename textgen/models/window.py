"""Window mode's layers: cut a window before every position, and attend over a window.

In window mode (`model.mode: window`, as in textgenrnn) the next token is predicted from a
fixed window of the tokens before it, read by a many-to-one network. To keep the model's
signature the same as every other architecture's, ids (batch, time) -> logits (batch,
time, vocab), `WindowFrames` cuts the window ending at each position out of the embedded
sequence (zero vectors stand in for positions before the start), the window network runs
on all of them as one batch, and `WindowUnframe` puts its logits back in (batch, time).
Generation (`WindowStepper`) re-feeds the last `window` tokens, padded as `WindowFrames`
pads them, for every new token.
"""

from __future__ import annotations

import keras
import tensorflow as tf
from keras import ops

from textgen.errors import ModelFileError
from textgen.models.layers import concatenated_label_width, find_label_embedding, find_token_embedding, label_rows


@keras.saving.register_keras_serializable(package="textgen")
class WindowFrames(keras.layers.Layer):
    """(batch, time, dim) -> (batch * time, window, dim): the window ending at each position.

    Positions before the start of the sequence are zero vectors, which is also what
    generation feeds while fewer than `window` tokens exist.
    """

    def __init__(self, window, **kwargs):
        super().__init__(**kwargs)
        self.window = window

    def call(self, x):
        dim = ops.shape(x)[-1]
        padded = ops.pad(x, [[0, 0], [self.window - 1, 0], [0, 0]])
        time = ops.shape(x)[1]
        # Gather indices (time, window): row t holds padded positions t .. t + window - 1.
        index = ops.arange(time)[:, None] + ops.arange(self.window)[None, :]
        frames = ops.take(padded, index, axis=1)  # (batch, time, window, dim)
        return ops.reshape(frames, (-1, self.window, dim))

    def compute_output_shape(self, input_shape):
        return (None, self.window, input_shape[-1])

    def get_config(self):
        config = super().get_config()
        config.update(window=self.window)
        return config


@keras.saving.register_keras_serializable(package="textgen")
class WindowUnframe(keras.layers.Layer):
    """[(batch * time, vocab) logits, (batch, time) ids] -> (batch, time, vocab)."""

    def call(self, inputs):
        logits, ids = inputs
        shape = ops.shape(ids)
        return ops.reshape(logits, (shape[0], shape[1], ops.shape(logits)[-1]))

    def compute_output_shape(self, input_shapes):
        logits, ids = input_shapes
        return (ids[0], ids[1], logits[-1])


@keras.saving.register_keras_serializable(package="textgen")
class AttentionPooling(keras.layers.Layer):
    """An attention-weighted average over time: (batch, time, features) -> (batch, features).

    One learned vector scores every time step; the softmax of the scores weights the
    average (textgenrnn's AttentionWeightedAverage). With the embedding and every recurrent
    layer's outputs concatenated as its input, the output layer sees skip connections from
    each level.
    """

    def build(self, input_shape):
        self.score = self.add_weight(shape=(input_shape[-1], 1), name="score",
                                     initializer="glorot_uniform")
        super().build(input_shape)

    def call(self, x):
        scores = ops.matmul(x, ops.cast(self.score, x.dtype))[..., 0]  # (batch, time)
        weights = ops.softmax(ops.cast(scores, "float32"), axis=-1)
        return ops.sum(x * ops.cast(weights, x.dtype)[..., None], axis=1)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[-1])


class WindowStepper:
    """Window mode's generation step: the last `window` tokens, re-fed through the window network.

    `initial_states(batch, labels=None)` and `step(token_ids, states) -> (float32 logits, states)`
    are what every generation loop calls. States: [[history (batch, window) int32, filled (batch,)
    int32]]: the tokens so far, newest last, and how many of them are real; earlier slots
    are zero vectors, as in training (`WindowFrames`). A conditioned model's states end in
    [[label vectors (batch, embedding_dim)]], joined to every real token's embedding (added or
    concatenated) as the model joins them before cutting the windows
    (textgen.generation.steppers).
    """

    batch_axis = 0

    def __init__(self, model: keras.Model):
        self.embedding = find_token_embedding(model)
        self.labels = find_label_embedding(model)
        frames = [layer for layer in model.layers if isinstance(layer, WindowFrames)]
        networks = [layer for layer in model.layers if isinstance(layer, keras.Model)]
        if not (frames and networks):
            raise ModelFileError(f"model {model.name} is described as a window model but has no window frames "
                                 "and window network to step through")
        self.window, self.network = frames[0].window, networks[0]

    def initial_states(self, batch_size: int, labels=None):
        states = [[tf.zeros([batch_size, self.window], tf.int32), tf.zeros([batch_size], tf.int32)]]
        vectors = label_rows(self.labels, batch_size, labels)
        return states if vectors is None else states + [[vectors]]

    def step(self, token_ids, states):
        history, filled = states[0]
        labels = states[1:]
        history = tf.concat([history[:, 1:], tf.cast(token_ids, tf.int32)[:, None]], axis=1)
        filled = tf.minimum(filled + 1, self.window)
        real = tf.range(self.window)[None, :] >= (self.window - filled)[:, None]  # (batch, window)
        x = self.embedding(history)
        if labels:
            vectors = tf.cast(labels[0][0], x.dtype)[:, None, :]
            x = tf.concat([x, tf.broadcast_to(vectors, [tf.shape(x)[0], self.window, vectors.shape[-1]])], axis=-1) \
                if concatenated_label_width(self.labels) else x + vectors
        x = x * tf.cast(real, x.dtype)[..., None]
        return tf.cast(self.network(x), tf.float32), [[history, filled]] + labels
