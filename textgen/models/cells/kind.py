"""What a recurrent cell kind provides, and the parts every kind shares.

The gate arithmetic of a kind is written once, in `gates`, on float32 pre-activations, and
three runners feed it: generation's row stepper (batch in rows), its packed column stepper
(batch in columns, bfloat16 products) and the fused training kernel (textgen.models.fused_rnn),
whose backward pass is the kind's `gates_backward`, the gradient of `gates`.

The pre-activations come from two products, one of the input x and one of the previous
hidden state h, laid out as `units`-wide blocks in this order:

    shared          x @ kernel + h @ recurrent_kernel + biases (most gates)
    recurrent_only  h's part alone (a GRU's candidate, which the reset gate scales)
    input_only      x's part alone (that candidate's input part)

`pack` returns the weights in that layout: `x_kernel` makes the shared and input-only
blocks, `h_kernel` the shared and recurrent-only ones. A runner hands `gates` the blocks
as a list, so the gate code never sees whether the batch is in rows or columns. Weights a
cell multiplies inside its gates (a peephole's, MGU's candidate kernel) are `extras`, and
`gates` multiplies by them through `product(v, k)`, which the runner provides: v times
extras[k] in the runner's layout and dtype, split into blocks.
"""

from __future__ import annotations

from dataclasses import dataclass

import keras
import tensorflow as tf


@dataclass(frozen=True)
class Packed:
    """A cell's weights in its kind's pre-activation layout, as tensors."""

    x_kernel: tf.Tensor  # (input, (shared + input_only) * units)
    h_kernel: tf.Tensor  # (units, (shared + recurrent_only) * units)
    x_bias: tf.Tensor  # added to x's product
    h_bias: tf.Tensor | None = None  # added to h's product, where the cell keeps a bias of its own there
    extras: tuple = ()  # matrices `gates` multiplies by through `product`


class CellKind:
    """One recurrent cell kind. Subclasses set the class attributes and write `pack` and `gates`."""

    name = ""  # what model.cell says
    cell_class: type = None  # the Keras cell class a saved model holds
    layer_class: type | None = None  # Keras's layer for the cell (LSTM); None: keras.layers.RNN(cell)
    fused_class: type | None = None  # the training twin with a fused CPU kernel, where one exists
    cudnn = False  # Keras's layer can take cuDNN's fused kernel on a GPU
    states = 1  # states carried between steps, each `units` wide; the first is h
    shared, recurrent_only, input_only = 1, 0, 0  # pre-activation blocks (module docstring)
    gates_read_h = False  # the gates read h_{t-1} themselves, beyond h @ h_kernel (GRU: z * h)

    @property
    def blocks(self) -> int:
        return self.shared + self.recurrent_only + self.input_only

    def pre_activations(self, x_part, h_part, axis: int) -> list:
        """The blocks `gates` takes, from x's and h's products (biases added), stacked along `axis`."""
        if self.blocks == self.shared:  # one sum, then the split
            return split_blocks(x_part + h_part, self.blocks, axis)
        s = self.shared
        xs = split_blocks(x_part, s + self.input_only, axis)
        hs = split_blocks(h_part, s + self.recurrent_only, axis)
        return [a + b for a, b in zip(xs[:s], hs[:s])] + hs[s:] + xs[s:]

    def x_blocks(self, blocks: list) -> list:
        """The blocks x's product makes (shared, input-only), e.g. their gradients."""
        return blocks[:self.shared] + blocks[self.shared + self.recurrent_only:]

    def h_blocks(self, blocks: list) -> list:
        """The blocks h's product makes (shared, recurrent-only)."""
        return blocks[:self.shared + self.recurrent_only]

    # ------------------------------------------------------------------ building

    def make_cell(self, units: int, penalty):
        """A new cell of this kind with textgen's options (for kinds without a layer class)."""
        return self.cell_class(units, kernel_regularizer=penalty, recurrent_regularizer=penalty)

    def build_layer(self, units: int, *, name: str, penalty=None, return_sequences: bool = True,
                    return_state: bool = False, fused: bool = False):
        """The recurrent layer of this kind; `fused` asks for the training twin where there is one.

        Options stay at the values for which Keras picks cuDNN on a GPU (tanh and sigmoid,
        no recurrent dropout, no unroll, biases).
        """
        if self.layer_class is None:
            return keras.layers.RNN(self.make_cell(units, penalty), return_sequences=return_sequences,
                                    return_state=return_state, name=name)
        layer_class = self.fused_class if fused and self.fused_class else self.layer_class
        return layer_class(units, name=name, return_sequences=return_sequences, return_state=return_state,
                           kernel_regularizer=penalty, recurrent_regularizer=penalty)

    # ------------------------------------------------------------------ what the gates cover

    def supports(self, cell) -> bool:
        """Whether `gates` computes this cell: its class, and default activations where it has options."""
        return (type(cell) is self.cell_class
                and getattr(cell, "activation", keras.activations.tanh) is keras.activations.tanh
                and getattr(cell, "recurrent_activation", keras.activations.sigmoid) is keras.activations.sigmoid)

    def cudnn_problems(self, layer) -> list[str] | None:
        """What keeps Keras from giving `layer` cuDNN's kernel: None when Keras has none for it,
        else the options that close it (empty: none do)."""
        if not self.cudnn or not isinstance(layer, self.layer_class):
            return None
        cell = layer.cell
        checks = [(cell.activation is keras.activations.tanh, "activation is not tanh"),
                  (cell.recurrent_activation is keras.activations.sigmoid, "recurrent activation is not sigmoid"),
                  (not cell.recurrent_dropout, "recurrent dropout"), (not layer.unroll, "unroll"),
                  (cell.use_bias, "no bias")]
        return [why for ok, why in checks if not ok]

    # ------------------------------------------------------------------ the arithmetic

    def pack(self, cell) -> Packed:
        """The cell's weights in this kind's layout, as tensors differentiable in its variables."""
        raise NotImplementedError

    def gates(self, z: list, states: list, product):
        """One step from the pre-activation blocks `z` and the previous `states` (float32).

        Returns (h, new states, saved): `saved` is the list of tensors, each like h, that
        `gates_backward` reads; runners that do not train drop it.
        """
        raise NotImplementedError

    def gates_backward(self, saved: list, d_states: list):
        """The gradient of `gates` (kinds with a fused twin): from `saved` and the gradients of
        the new states, the gradients of the blocks and of the previous states through the gates
        alone. The previous h's entry is None unless `gates_read_h`."""
        raise NotImplementedError


def split_blocks(tensor, count: int, axis: int) -> list:
    """`tensor` cut into `count` equal blocks along `axis` (no op at all for one block)."""
    return [tensor] if count == 1 else tf.split(tensor, count, axis=axis)


def read(weight):
    """A cell weight as a tensor, read as the layer reads it (inside `call`, in its compute dtype)."""
    return keras.ops.convert_to_tensor(weight)


def bias_or_zeros(cell, width):
    """The cell's bias, or float32 zeros of `width` for a cell built with use_bias=False."""
    return read(cell.bias) if getattr(cell, "bias", None) is not None else tf.zeros([width])


def keras_cell_step(kind: CellKind, cell, inputs, states):
    """One step of a textgen Keras cell (`cell.call`) through its kind's `gates`, batch in rows.

    textgen's own cells train through `keras.layers.RNN`, which calls the cell once per time
    step; running the kind's gates there keeps the arithmetic written once, for that loop,
    generation's steppers and the fused kernel alike.
    """
    states = list(states) if isinstance(states, (list, tuple)) else [states]
    packed = kind.pack(cell)
    x_part = tf.matmul(inputs, packed.x_kernel) + packed.x_bias
    h_part = tf.matmul(states[0], packed.h_kernel)
    if packed.h_bias is not None:
        h_part = h_part + packed.h_bias

    def product(v, k):
        extra = packed.extras[k]
        return split_blocks(tf.matmul(v, extra), extra.shape[1] // cell.units, axis=-1)

    h, new_states, _ = kind.gates(kind.pre_activations(x_part, h_part, axis=-1), states, product)
    return h, new_states


def weight_options(cell, initializers: tuple[str, ...], regularizers: tuple[str, ...]) -> dict:
    """A textgen cell's `<name>_initializer` and `<name>_regularizer` attributes, serialised for
    its `get_config`."""
    return {**{f"{name}_initializer": keras.initializers.serialize(getattr(cell, f"{name}_initializer"))
               for name in initializers},
            **{f"{name}_regularizer": keras.regularizers.serialize(getattr(cell, f"{name}_regularizer"))
               for name in regularizers}}
