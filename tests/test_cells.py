import keras
import numpy as np

from textgen.models.cells.peephole_lstm import PeepholeLSTMCell


def sigmoid(z):
    return 1 / (1 + np.exp(-z))


def test_peephole_step_matches_the_equations_by_hand():
    rng = np.random.default_rng(0)
    units, dim = 4, 3
    cell = PeepholeLSTMCell(units)
    cell.build((None, dim))
    for w in cell.weights:  # random non-zero weights everywhere, biases included
        w.assign(rng.normal(size=w.shape).astype("float32") * 0.5)
    x = rng.normal(size=(2, dim)).astype("float32")
    h0 = rng.normal(size=(2, units)).astype("float32")
    c0 = rng.normal(size=(2, units)).astype("float32")
    h, (h_state, c) = cell(x, [h0, c0])

    W, U, P, b = (np.asarray(w) for w in (cell.kernel, cell.recurrent_kernel, cell.peephole_kernel, cell.bias))
    u = units
    # Gate weights as the matrices of the equations, acting on [C, h, x] (no C for g).
    def gate(k, peep_block, cell_state):
        z = x @ W[:, k * u:(k + 1) * u] + h0 @ U[:, k * u:(k + 1) * u] + b[k * u:(k + 1) * u]
        return z if peep_block is None else z + cell_state @ P[:, peep_block * u:(peep_block + 1) * u]

    i = sigmoid(gate(0, 0, c0))
    f = sigmoid(gate(1, 1, c0))
    g = np.tanh(gate(2, None, None))
    c_expected = f * c0 + i * g
    o = sigmoid(gate(3, 2, c_expected))
    h_expected = o * np.tanh(c_expected)
    np.testing.assert_allclose(c, c_expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(h, h_expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(h_state, h_expected, rtol=1e-5, atol=1e-5)


def test_peephole_cell_round_trips(tmp_path):
    cell = PeepholeLSTMCell(6, unit_forget_bias=False, recurrent_initializer="zeros", name="peep")
    config = cell.get_config()
    again = PeepholeLSTMCell.from_config(config)
    assert again.get_config() == config
    assert (again.units, again.unit_forget_bias, again.name) == (6, False, "peep")  # not the defaults
    assert type(again.recurrent_initializer).__name__ == "Zeros"
    model = keras.Sequential([keras.Input((None, 3)), keras.layers.RNN(PeepholeLSTMCell(6), return_sequences=True)])
    x = np.random.default_rng(1).normal(size=(2, 5, 3)).astype("float32")
    model.save(tmp_path / "p.keras")
    loaded = keras.models.load_model(tmp_path / "p.keras", safe_mode=True)
    np.testing.assert_allclose(loaded(x), model(x), atol=1e-6)


def test_forget_bias_starts_at_one():
    cell = PeepholeLSTMCell(3)
    cell.build((None, 2))
    np.testing.assert_array_equal(np.asarray(cell.bias), [0, 0, 0, 1, 1, 1, 0, 0, 0, 0, 0, 0])
