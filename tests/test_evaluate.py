"""`textgen evaluate` and `textgen plot`."""

import json
import os
import math

import numpy as np
import pytest
import tensorflow as tf
from click.testing import CliRunner

from conftest import CORPORA
from textgen.cli.main import cli
from textgen.data.dataset import make_chunks
from textgen.errors import UsageError
from textgen.evaluation.evaluate import evaluate_file
from textgen.generation.generate import load_keras_model
from textgen.models.layers import find_token_embedding
from textgen.training.plot import matplotlib_available
from textgen.data.tokenizer import tokenizer_from_config


@pytest.fixture(scope="module")
def held_out(tmp_path_factory):
    """Shakespeare the tiny model never saw (it trained on the first 30,000 characters)."""
    path = tmp_path_factory.mktemp("held_out") / "held_out.txt"
    text = (CORPORA / "tinyshakespeare.txt").read_text()[30_000:36_000]
    path.write_text(text[:text.rindex("\n") + 1])  # whole lines, so the file reads back unchanged
    return path


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def direct_loss(model, ids, seq):
    """Mean cross-entropy over the windows evaluate uses, computed in one go without streaming."""
    windows = make_chunks(ids, seq)
    tail = ids[len(windows) * seq:]
    total, count = 0.0, 0
    for batch in [windows] + ([tail[None, :]] if len(tail) > 1 else []):
        logits = model(batch[:, :-1], training=False)
        losses = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=batch[:, 1:], logits=logits)
        total += float(tf.reduce_sum(tf.cast(losses, tf.float64)))
        count += batch.shape[0] * (batch.shape[1] - 1)
    return total / count, count


def test_bits_per_char_is_loss_over_ln2_and_streaming_changes_nothing(trained_model, held_out):
    model = load_keras_model(trained_model)
    streamed = evaluate_file(model, held_out, batch_size=3, block_chars=500)  # many blocks, many batches
    whole = evaluate_file(model, held_out, batch_size=64, block_chars=1 << 20)
    assert streamed.bits_per_char == pytest.approx(streamed.loss / math.log(2), rel=1e-12)
    assert streamed.bits_per_token == pytest.approx(streamed.bits_per_char, rel=1e-12)  # a token is a character
    # Batches of 3 and 64 take different float32 kernels (the last bits differ on some CPUs); a
    # token dropped or counted twice would move the mean by about 1e-4.
    assert streamed.loss == pytest.approx(whole.loss, rel=1e-6) and streamed.tokens == whole.tokens
    tokenizer = tokenizer_from_config(find_token_embedding(model).tokenizer)
    ids = tokenizer.encode(held_out.read_text())
    loss, count = direct_loss(model, ids, streamed.seq_length)
    assert streamed.tokens == count == len(ids) - 1 and streamed.characters == len(ids)
    assert streamed.loss == pytest.approx(loss, abs=1e-5)
    assert streamed.perplexity == pytest.approx(math.exp(loss), rel=1e-4)
    assert streamed.seq_length == 32  # the model's own training.seq_length


def test_evaluate_scores_a_file_without_a_final_newline_as_it_is(trained_model, held_out, tmp_path):
    model = load_keras_model(trained_model)
    text = held_out.read_text()[:700].rstrip("\n")  # the reader would add a newline to join files
    path = tmp_path / "no_newline.txt"
    path.write_text(text)
    result = evaluate_file(model, path)
    ids = tokenizer_from_config(find_token_embedding(model).tokenizer).encode(text)
    loss, count = direct_loss(model, ids, result.seq_length)
    assert result.characters == len(text) and result.tokens == count == len(text) - 1
    assert result.loss == pytest.approx(loss, abs=1e-5)


def test_cli_evaluate_json_and_unknown_characters(trained_model, held_out, tmp_path):
    result = run("evaluate", "--model", trained_model, "--text", held_out, "--json")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    assert doc["level"] == "char" and doc["tokens"] == doc["characters"] - 1 > 5000 and 0 < doc["bits_per_char"] < 8
    assert doc["bits_per_char"] == pytest.approx(doc["loss"] / math.log(2))
    plain = run("evaluate", "--model", trained_model, "--text", held_out)
    assert plain.exit_code == 0 and "bits per character: " in plain.output and "perplexity: " in plain.output

    odd = tmp_path / "odd.txt"
    odd.write_text("Señor, the café is closed.\n" * 5)
    refused = run("evaluate", "--model", trained_model, "--text", odd)
    assert refused.exit_code == 2 and "'ñ', 'é'" in refused.output and "--skip-unknown" in refused.output
    skipped = run("evaluate", "--model", trained_model, "--text", odd, "--skip-unknown", "--json")
    assert skipped.exit_code == 0 and json.loads(skipped.output)["unknown_tokens"] == 10
    missing = run("evaluate", "--model", trained_model, "--text", tmp_path / "nope.txt")
    assert missing.exit_code == 2 and "does not exist" in missing.output  # a wrong request, like a missing config
    zero = run("evaluate", "--model", trained_model, "--text", held_out, "--seq-length", "0")
    assert zero.exit_code == 2 and "'--seq-length': 0 is not in the range 1<=x<=1048576" in zero.output
    huge = run("evaluate", "--model", trained_model, "--text", held_out, "--seq-length", str(2**63 - 1))
    assert huge.exit_code == 2 and "9223372036854775807 is not in the range 1<=x<=1048576" in huge.output
    assert "Traceback" not in huge.output and len([line for line in huge.output.splitlines() if line]) <= 4
    # (click's usage hint and one error line; a number too large for numpy once ended in a traceback)


def test_evaluate_reports_the_context_it_used(trained_model, tmp_path):
    short = tmp_path / "short.txt"
    short.write_text("ROMEO: What light\n")  # 18 characters: one window of 17 predictions
    result = run("evaluate", "--model", trained_model, "--text", short, "--seq-length", "1000", "--json")
    facts = json.loads(result.output)
    assert (facts["tokens"], facts["seq_length"]) == (17, 17)
    result = run("evaluate", "--model", trained_model, "--text", short, "--seq-length", "4", "--json")
    assert json.loads(result.output)["seq_length"] == 4


def test_evaluate_refuses_windows_longer_than_a_transformers_context(held_out, tmp_path):
    from textgen.config import ModelConfig
    from textgen.models.builder import build_model

    text = held_out.read_text()
    model = build_model(ModelConfig(type="transformer", embedding_dim=16, heads=2, layers=1, context_length=16),
                        {"level": "char", "vocabulary": sorted(set(text))})
    path = tmp_path / "transformer.keras"
    model.save(path)
    result = run("evaluate", "--model", path, "--text", held_out, "--seq-length", "17")
    assert result.exit_code == 2 and "exceeds the transformer's context of 16 tokens" in result.output
    assert "Traceback" not in result.output
    assert run("evaluate", "--model", path, "--text", held_out, "--seq-length", "16").exit_code == 0


def test_word_model_bits_per_char_counts_characters(small_corpus, held_out, tmp_path):
    from conftest import tiny_overrides
    from textgen.config import load_config
    from textgen.training.train import train

    config = load_config(None, tiny_overrides(small_corpus, tmp_path / "run", **{"tokenizer.level": "word",
                                                                                 "training.epochs": 1}))
    model = load_keras_model(train(config, echo=lambda _: None, verbose=0).model_path)
    result = evaluate_file(model, held_out)
    assert result.level == "word" and 0 < result.unknown_tokens < result.tokens
    assert result.characters == len(held_out.read_text())
    total_bits = result.bits_per_token * result.tokens
    assert result.bits_per_char == pytest.approx(total_bits / result.characters)
    assert result.tokens < result.characters / 3  # words, not characters
    assert np.isfinite(result.perplexity)


@pytest.mark.skipif(not matplotlib_available(), reason="matplotlib is not installed (pip install 'textgen[plot]')")
def test_plot_writes_loss_png(trained_model, tmp_path):
    run_dir = trained_model.parent
    assert (run_dir / "loss.png").read_bytes().startswith(b"\x89PNG")  # drawn at the end of training
    (run_dir / "loss.png").unlink()
    result = run("plot", run_dir)
    assert result.exit_code == 0, result.output
    assert (run_dir / "loss.png").read_bytes().startswith(b"\x89PNG")
    hidden = sorted(p.name for p in run_dir.iterdir() if p.name.startswith("."))
    assert hidden == [".textgen-run.json", ".textgen-run.lock"]  # the manifest and the lock; no temporary file
    empty = run("plot", tmp_path)
    assert empty.exit_code == 2 and "no history.csv" in empty.output


def test_plot_refuses_a_history_textgen_did_not_write(tmp_path):
    (tmp_path / "history.csv").write_text("loss,val_loss\n1.0,2.0\n")
    result = run("plot", tmp_path)
    assert result.exit_code == 1 and "has no epoch column" in result.output and "Traceback" not in result.output
    (tmp_path / "history.csv").write_text("epoch,loss\n1,n/a\n")
    result = run("plot", tmp_path)
    assert result.exit_code == 1 and "not a number" in result.output


def test_plot_without_matplotlib_says_how_to_get_it(trained_model, monkeypatch):
    monkeypatch.setattr("textgen.training.plot.matplotlib_available", lambda: False)
    result = run("plot", trained_model.parent)
    assert result.exit_code == 1 and "pip install 'textgen[plot]'" in result.output


def test_new_commands_have_help():
    for command in ("evaluate", "plot"):
        result = run(command, "--help")
        assert result.exit_code == 0 and "Usage:" in result.output


def test_evaluate_reads_the_text_from_stdin(trained_model, held_out):
    from_file = run("evaluate", "--model", trained_model, "--text", held_out, "--json")
    from_stdin = CliRunner().invoke(cli, ["evaluate", "--model", str(trained_model), "--text", "-", "--json"],
                                    input=held_out.read_bytes())
    assert from_stdin.exit_code == 0, from_stdin.output
    file_doc, stdin_doc = json.loads(from_file.output), json.loads(from_stdin.output)
    assert stdin_doc["text"] == "-"
    for key in ("characters", "tokens", "loss", "bits_per_char"):
        assert stdin_doc[key] == pytest.approx(file_doc[key], abs=1e-6), key
    binary = CliRunner().invoke(cli, ["evaluate", "--model", str(trained_model), "--text", "-"],
                                input=b"text\x00with a NUL\n")
    assert binary.exit_code == 1 and "the text on stdin looks binary" in binary.output


def test_evaluate_refuses_a_text_that_is_not_a_regular_file(trained_model, tmp_path):
    model = load_keras_model(trained_model)
    fifo = tmp_path / "text.fifo"
    os.mkfifo(fifo)  # opening it for reading would block until a writer came
    for path, kind in ((fifo, "a FIFO"), ("/dev/zero", "a character device")):
        with pytest.raises(UsageError, match=rf"text file {path} is not a regular file \({kind}\)"):
            evaluate_file(model, path, encoding="utf-16-le")
    refused = run("evaluate", "--model", trained_model, "--text", "/dev/zero", "--encoding", "utf_16_le")
    assert refused.exit_code == 2 and "is not a regular file (a character device)" in refused.output


def test_evaluate_canonicalises_the_encoding_name(trained_model, held_out, tmp_path):
    utf16 = tmp_path / "held_out_utf16.txt"
    utf16.write_bytes(held_out.read_text().encode("utf-16-le"))
    plain = json.loads(run("evaluate", "--model", trained_model, "--text", held_out, "--json").output)
    for name in ("utf-16-le", "utf_16_le", "UTF_16LE"):
        result = run("evaluate", "--model", trained_model, "--text", utf16, "--json", "--encoding", name)
        assert result.exit_code == 0, result.output
        assert json.loads(result.output)["loss"] == pytest.approx(plain["loss"], abs=1e-6)


def test_progress_follows_the_scoring_not_the_reading(trained_model, held_out, tmp_path, monkeypatch):
    import textgen.evaluation.evaluate as evaluate_module

    path = tmp_path / "long.txt"
    path.write_text(held_out.read_text() * 16)  # about 100 KB, every character known to the model
    scored = []  # tokens scored, batch by batch
    real = evaluate_module._scorer

    def counting(model):
        score = real(model)

        def run_batch(windows):
            scored.append(windows.shape[0] * (windows.shape[1] - 1))
            return score(windows)
        return run_batch

    monkeypatch.setattr(evaluate_module, "_scorer", counting)
    seen = []
    evaluate_file(load_keras_model(trained_model), path, batch_size=8, block_chars=10_000,
                  progress=lambda n, total: seen.append((n, total, sum(scored))))
    size = path.stat().st_size  # ASCII with \n line ends: one byte a character
    sizes = [n for n, _, _ in seen]
    assert sizes == sorted(sizes) and sizes[-1] == size and len(set(sizes)) >= 5
    # Characters are counted as batches are scored (here one token a character, each batch
    # told at once), not as blocks are read, which would run a whole block ahead.
    assert all(n == min(tokens, size) for n, _, tokens in seen[:-1]), seen
    # The total is known from the start: estimated from the file's size, exact at the end.
    assert all(total == size for _, total, _ in seen), seen


def test_evaluate_measures_the_pretrained_model_without_model(held_out):
    from textgen.pretrained import default_model_path

    result = run("evaluate", "--text", held_out, "--json")
    assert result.exit_code == 0, result.output
    facts = json.loads(result.output)
    assert facts["model"] == str(default_model_path()) and facts["level"] == "char"
    assert facts["bits_per_char"] < 3.0  # the pretrained model knows Shakespeare (uniform over 65: 6.0)
    assert "[default: the pretrained" in " ".join(run("evaluate", "--help").output.split())
