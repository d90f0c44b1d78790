import keras
import numpy as np

from textgen.models.transformer import PositionEmbedding, TransformerBlock


def test_cached_steps_equal_the_full_causal_pass():
    rng = np.random.default_rng(0)
    block, positions = TransformerBlock(4, 64), PositionEmbedding(16, 32)
    x = positions(rng.normal(size=(2, 10, 32)).astype("float32"))
    full = np.asarray(block(x))
    cache_k = np.zeros((2, 4, 16, 8), "float32")
    cache_v = cache_k.copy()
    steps = []
    for t in range(10):
        out, cache_k, cache_v = block.step(x[:, t], cache_k, cache_v, t)
        steps.append(out)
    np.testing.assert_allclose(np.stack(steps, 1), full, atol=1e-5)


def test_attention_is_causal():
    rng = np.random.default_rng(1)
    block = TransformerBlock(2, 16)
    x = rng.normal(size=(1, 6, 8)).astype("float32")
    changed = x.copy()
    changed[:, 4:] += 1.0  # change the future only
    np.testing.assert_allclose(block(x)[:, :4], block(changed)[:, :4], atol=1e-6)
    assert not np.allclose(block(x)[:, 4:], block(changed)[:, 4:])


def test_transformer_layers_round_trip(tmp_path):
    for layer, settings in ((TransformerBlock(4, 64, dropout=0.1, name="b"), {"num_heads": 4, "mlp_dim": 64,
                                                                              "dropout": 0.1, "name": "b"}),
                            (PositionEmbedding(16, 32, name="p"), {"max_length": 16, "output_dim": 32, "name": "p"})):
        config = layer.get_config()
        again = type(layer).from_config(config)
        assert again.get_config() == config
        assert {key: getattr(again, key) for key in settings} == settings  # not the defaults
    model = keras.Sequential([keras.Input((None, 32)), PositionEmbedding(16, 32), TransformerBlock(4, 64)])
    x = np.random.default_rng(2).normal(size=(2, 7, 32)).astype("float32")
    model.save(tmp_path / "t.keras")
    loaded = keras.models.load_model(tmp_path / "t.keras", safe_mode=True)
    np.testing.assert_allclose(loaded(x), model(x), atol=1e-6)


def test_blocks_train_under_mixed_bfloat16():
    from textgen.config import ModelConfig
    from textgen.models.builder import build_model

    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        model = build_model(ModelConfig(type="transformer", embedding_dim=16, heads=2, layers=2, context_length=8),
                            {"level": "char", "vocabulary": list("abcdefgh")})
        # XLA off, as textgen trains on a CPU: compiling emulated bfloat16 (a CPU without it) took 40 s
        model.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                      jit_compile=False)
        ids = np.random.default_rng(3).integers(0, 8, size=(4, 8)).astype("int32")
        model.fit(ids, ids, epochs=1, verbose=0)
        assert model(ids).dtype == "float32"
    finally:
        keras.mixed_precision.set_global_policy("float32")
