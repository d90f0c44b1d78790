"""The token-id cache: built in blocks, reused while current, read by tf.data without copies."""

import hashlib
import io
import json
import os

import numpy as np
import pytest
import tensorflow as tf
from click.testing import CliRunner

from conftest import CORPORA, tiny_overrides
from textgen.cli.main import cli
from textgen.config import load_config
from textgen.data.corpus import stream_corpus
from textgen.data.dataset import id_table, make_chunks, make_dataset, make_training_stream, steps_per_pass
from textgen.errors import CorpusError, UsageError
from textgen.data.prepare import prepare_corpus
from textgen.data.tokenizer import CharTokenizer, WordTokenizer, fit_tokenizer_stream
from textgen.training.train import train


def config_for(corpus, out, **extra):
    return load_config(None, tiny_overrides(corpus, out, **extra))


def test_cache_holds_the_encoded_corpus_as_uint16(small_corpus, tmp_path):
    config = config_for(small_corpus, tmp_path / "run")
    shown = io.StringIO()
    prepared = prepare_corpus(config, tmp_path / "cache", progress=shown)
    text = "".join(stream_corpus([str(small_corpus)]))
    expected = fit_tokenizer_stream([text], config.tokenizer).encode(text)
    assert isinstance(prepared.ids, np.memmap) and prepared.ids.dtype == np.uint16
    np.testing.assert_array_equal(prepared.ids, expected)
    assert prepared.fingerprint == {"tokens": len(expected),  # what --resume compares
                                    "sha1": hashlib.sha1(np.ascontiguousarray(expected).tobytes()).hexdigest()}
    assert (tmp_path / "cache" / "ids.bin").stat().st_size == 2 * len(expected)
    assert not prepared.reused and prepared.coverage == 1.0
    lines = shown.getvalue().splitlines()
    assert lines[0].startswith("preparing corpus: fitting vocabulary") and lines[-1].startswith("preparing corpus: encoding")
    size = f" of {small_corpus.stat().st_size / 1e3:,.1f} KB "  # a small corpus in KB, not "0.0 MB"
    assert all("MB/s" in line and size in line for line in lines), (size, lines)


def test_the_corpus_is_read_in_blocks_never_whole(small_corpus, tmp_path, monkeypatch):
    seen = []
    original = CharTokenizer.encode

    def encode(self, text):
        seen.append(len(text))
        return original(self, text)

    monkeypatch.setattr(CharTokenizer, "encode", encode)
    # (Gutenberg stripping holds back the first 64 KB while it looks for a header.)
    config = config_for(small_corpus, tmp_path / "run", **{"corpus.strip_gutenberg": "false"})
    prepared = prepare_corpus(config, tmp_path / "cache", progress=None, block_chars=2000)
    assert len(seen) >= 15 and max(seen) <= 2000 and sum(seen) == len(prepared.ids)


def test_cache_is_reused_until_the_corpus_or_tokenizer_changes(tmp_path):
    corpus = tmp_path / "text.txt"
    corpus.write_text((CORPORA / "tinyshakespeare.txt").read_text()[:5000])
    config = config_for(corpus, tmp_path / "run")
    first = prepare_corpus(config, tmp_path / "cache", progress=None)
    written = (tmp_path / "cache" / "ids.bin").stat().st_mtime_ns
    again = prepare_corpus(config, tmp_path / "cache", progress=None)
    assert again.reused and (tmp_path / "cache" / "ids.bin").stat().st_mtime_ns == written
    np.testing.assert_array_equal(again.ids, first.ids)
    word = prepare_corpus(config_for(corpus, tmp_path / "run", **{"tokenizer.level": "word"}), tmp_path / "cache",
                          progress=None)
    assert not word.reused and isinstance(word.tokenizer, WordTokenizer) and len(word.ids) < len(first.ids)
    corpus.write_text(corpus.read_text() + "More text, and a new letter: Z!\n")
    changed = prepare_corpus(config, tmp_path / "cache", progress=None)
    assert not changed.reused and len(changed.ids) == len("".join(stream_corpus([str(corpus)])))
    # A given tokenizer equal to the cached one (as on --resume) reuses the cache.
    resumed = prepare_corpus(config, tmp_path / "cache", tokenizer=changed.tokenizer, progress=None)
    assert resumed.reused


def test_given_tokenizer_and_unknown_characters(tmp_path):
    corpus = tmp_path / "text.txt"
    corpus.write_text("abc cab\n" * 50 + "Café señor\n")
    tokenizer = CharTokenizer(sorted(set("abc \n")))
    config = config_for(corpus, tmp_path / "run")
    with pytest.raises(UsageError, match=r"8 characters .* \(8 distinct: 'C', 'f', 'é', 's', 'e', 'ñ', 'o', 'r'\); "
                                         r"try again"):
        prepare_corpus(config, tmp_path / "cache", tokenizer=tokenizer, hint="; try again", progress=None)
    assert not (tmp_path / "cache" / "ids.bin").exists() and not list((tmp_path / "cache").glob(".*"))
    with pytest.raises(UsageError, match="character models have no unknown token"):
        prepare_corpus(config, tmp_path / "cache", tokenizer=tokenizer, on_unknown="unk", progress=None)
    dropped = prepare_corpus(config, tmp_path / "cache", tokenizer=tokenizer, on_unknown="drop", progress=None)
    assert tokenizer.decode(dropped.ids).endswith("cab\na \n") and dropped.unknown_count == 8
    assert dropped.unknown_tokens[:3] == ["C", "f", "é"]


def test_word_level_unknown_words_become_unk_or_are_dropped(tmp_path):
    corpus = tmp_path / "text.txt"
    corpus.write_text("the cat sat on the mat\n" * 30 + "the zebra sat\n")
    tokenizer = WordTokenizer.fit("the cat sat on the mat\n")
    config = config_for(corpus, tmp_path / "run", **{"tokenizer.level": "word"})
    with pytest.raises(UsageError, match="1 word the model's vocabulary lacks \\(1 distinct: 'zebra'\\)"):
        prepare_corpus(config, tmp_path / "cache", tokenizer=tokenizer, progress=None)
    unk = prepare_corpus(config, tmp_path / "cache", tokenizer=tokenizer, on_unknown="unk", progress=None)
    assert unk.unknown_count == 1 and int(np.sum(unk.ids == tokenizer.unk_id)) == 1
    assert unk.coverage == pytest.approx(1 - 1 / len(unk.ids))
    dropped = prepare_corpus(config, tmp_path / "cache", tokenizer=tokenizer, on_unknown="drop", progress=None)
    assert len(dropped.ids) == len(unk.ids) - 1 and tokenizer.unk_id not in dropped.ids


def test_coverage_counts_words_not_spacing_markers(tmp_path):
    corpus = tmp_path / "text.txt"
    corpus.write_text("the cat sat ,on the mat\n" * 20 + "the zebra sat\n")  # ' ,on': markers each line
    tokenizer = WordTokenizer.fit("the cat sat on the mat , \n")
    config = config_for(corpus, tmp_path / "run", **{"tokenizer.level": "word"})
    prepared = prepare_corpus(config, tmp_path / "cache", tokenizer=tokenizer, on_unknown="unk", progress=None)
    markers = int(np.isin(prepared.ids, tokenizer.marker_ids).sum())
    assert markers >= 20 and tokenizer.marker_ids and CharTokenizer.fit("ab").marker_ids == ()
    words = len(prepared.ids) - markers
    assert words == 20 * 8 + 4  # 7 words or marks and a newline per line; 'the zebra sat' and its newline
    assert prepared.coverage == pytest.approx(1 - 1 / words)


@pytest.mark.parametrize("text", ["\n\n   \n", ""])
def test_empty_corpus_is_an_error(tmp_path, text):
    corpus = tmp_path / "blank.txt"
    corpus.write_text(text)
    with pytest.raises(CorpusError, match="the corpus is empty"):
        prepare_corpus(config_for(corpus, tmp_path / "run"), tmp_path / "cache", progress=None)
    assert not (tmp_path / "cache" / "meta.json").exists()


def test_windows_are_read_from_the_memory_map_without_a_copy(small_corpus, tmp_path):
    prepared = prepare_corpus(config_for(small_corpus, tmp_path / "run"), tmp_path / "cache", progress=None)
    tail = prepared.ids[1001:]  # not aligned: shared through the whole map and an offset
    table, offset = id_table(tail)
    assert offset == 1001 and table.shape[0] == len(prepared.ids)
    tail[5] = 60  # the map is copy-on-write: this changes memory only, and the tensor sees it
    assert int(table[1006]) == 60 and prepared.ids[1006] == 60
    # The same batches as windows cut from an in-memory array.
    ids = np.asarray(prepared.ids[:2000]).astype(np.int32)
    from_map = make_training_stream(prepared.ids[:2000], 10, 8, seed=3)
    from_array = make_training_stream(ids, 10, 8, seed=3)
    for (x1, y1), (x2, y2) in zip(from_map.take(30), from_array.take(30)):
        np.testing.assert_array_equal(x1, x2)
        np.testing.assert_array_equal(y1, y2)
        assert x1.dtype == tf.int32


def test_training_stream_visits_every_window_once_per_pass():
    ids = np.arange(1001, dtype=np.int32)
    per_pass = steps_per_pass(len(ids), 10, 8)
    batches = [x.numpy() for x, _ in make_training_stream(ids, 10, 8, seed=1).take(2 * per_pass)]
    starts = [b[:, 0] for b in batches]
    first = np.concatenate(starts[:per_pass])
    assert len(set(first)) == per_pass * 8 and set(first) <= set(make_chunks(ids, 10)[:, 0])
    assert not np.array_equal(np.concatenate(starts[per_pass:]), first)  # the next pass reshuffles
    resumed = [x.numpy() for x, _ in make_training_stream(ids, 10, 8, seed=1, start_step=per_pass + 3).take(4)]
    for got, expected in zip(resumed, batches[per_pass + 3:]):
        np.testing.assert_array_equal(got, expected)


def test_shifted_windows_cut_each_pass_differently_and_resume_exactly():
    ids = np.arange(1001, dtype=np.int32)  # each id is its own position, so a window shows where it starts
    per_pass = steps_per_pass(len(ids), 10, 8)
    batches = [(x.numpy(), y.numpy()) for x, y in
               make_training_stream(ids, 10, 8, seed=1, shift_windows=True).take(6 * per_pass)]
    shifts = []
    for p in range(6):
        starts = np.concatenate([x[:, 0] for x, _ in batches[p * per_pass:(p + 1) * per_pass]])
        assert len(set(starts)) == per_pass * 8  # still every window once, none twice
        shift = {s % 10 for s in starts if s != len(ids) - 11}  # the window clamped at the end aside
        assert len(shift) == 1
        shifts.append(shift.pop())
    assert len(set(shifts)) > 1  # passes cut the text at different places
    for x, y in batches:
        np.testing.assert_array_equal(x, x[:, :1] + np.arange(10))  # whole windows of the text
        np.testing.assert_array_equal(y, x + 1)
        assert x.max() < len(ids) - 1
    resumed = [x.numpy() for x, _ in
               make_training_stream(ids, 10, 8, seed=1, shift_windows=True, start_step=2 * per_pass + 5).take(3)]
    for got, (expected, _) in zip(resumed, batches[2 * per_pass + 5:]):
        np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("setting, expected", [(None, True), ("false", False)])
def test_training_takes_shifted_windows_from_the_config(setting, expected, small_corpus, tmp_path, monkeypatch):
    import textgen.training.fit

    asked, real = [], textgen.training.fit.make_training_stream

    def recording(*args, **kwargs):
        asked.append(kwargs["shift_windows"])
        return real(*args, **kwargs)

    monkeypatch.setattr(textgen.training.fit, "make_training_stream", recording)
    extra = {"training.epochs": 1} | ({"training.shift_windows": setting} if setting else {})
    result = train(config_for(small_corpus, tmp_path / "run", **extra), echo=lambda _: None, verbose=0)
    assert asked == [expected] and result.global_step > 0


@pytest.mark.parametrize("shift", [False, True])
def test_replica_slices_make_up_the_global_batch(shift):
    ids = np.arange(2001, dtype=np.int32)
    whole = [x.numpy() for x, _ in make_training_stream(ids, 10, 8, seed=5, shift_windows=shift).take(5)]
    assert bool(whole[0][0, 0] % 10) == shift  # this seed's first pass is shifted (by 6)
    parts = []
    for pipeline in range(2):  # two workers with two replicas each: four slices of two windows
        context = tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=pipeline,
                                             num_replicas_in_sync=4)
        parts.append([x.numpy() for x, _ in make_training_stream(ids, 10, 8, seed=5, shift_windows=shift,
                                                                 input_context=context).take(10)])
    for step in range(5):
        rebuilt = np.concatenate([parts[0][2 * step], parts[0][2 * step + 1], parts[1][2 * step], parts[1][2 * step + 1]])
        np.testing.assert_array_equal(rebuilt, whole[step])
    context = tf.distribute.InputContext(num_input_pipelines=1, input_pipeline_id=0, num_replicas_in_sync=2)
    val = [x.numpy() for x, _ in make_dataset(ids, 10, 8, shuffle=False, input_context=context)]
    assert len(val) == 2 * 25 and all(v.shape == (4, 10) for v in val)


def test_training_writes_and_then_reuses_the_cache(small_corpus, tmp_path):
    lines = []
    config = config_for(small_corpus, tmp_path / "run", **{"training.epochs": 1, "training.steps_per_epoch": 2})
    train(config, echo=lines.append, verbose=0, progress=None)
    assert any(line.startswith("token cache written:") for line in lines)
    meta = json.loads((tmp_path / "run" / "cache" / "meta.json").read_text())
    assert meta["tokens"] == 30_001 and meta["dtype"] == "<u2"  # the corpus plus its final newline
    lines.clear()
    train(config, overwrite=True, echo=lines.append, verbose=0, progress=None)
    assert any(line.startswith("token cache reused:") for line in lines)


def test_prepare_command(small_corpus, tmp_path):
    args = ["prepare", *[a for o in tiny_overrides(small_corpus, tmp_path / "run") for a in ("--set", o)]]
    first = CliRunner().invoke(cli, args)
    assert first.exit_code == 0, first.output
    assert "token cache written:" in first.output and "30,001 tokens in all" in first.output
    assert "preparing corpus: encoding" in first.stderr
    again = CliRunner().invoke(cli, args)
    assert again.exit_code == 0 and "token cache reused:" in again.output and "preparing" not in again.stderr
    missing = CliRunner().invoke(cli, ["prepare", "--set", "corpus.paths=[nowhere.txt]", "--output",
                                       str(tmp_path / "x")])
    assert missing.exit_code == 2 and "corpus path nowhere.txt (relative to the working directory" in missing.output
    assert "does not exist" in missing.output
    assert not (tmp_path / "x").exists()  # refused before the run directory is made


def test_a_corpus_that_grows_between_the_two_passes_is_named_as_changed(small_corpus, tmp_path, monkeypatch):
    """The vocabulary pass and the encoding pass must read the same text; new text between them
    used to end as 'not in the model's vocabulary'."""
    import textgen.data.prepare as prepare_module
    from textgen.errors import CorpusError

    corpus = tmp_path / "growing.txt"
    corpus.write_text(small_corpus.read_text(encoding="utf-8"), encoding="utf-8")
    fit = prepare_module.fit_tokenizer_stream

    def fit_then_grow(*args, **kwargs):
        tokenizer = fit(*args, **kwargs)
        with corpus.open("a", encoding="utf-8") as more:
            more.write("\u00a7 text written while textgen was reading\n")
        return tokenizer

    monkeypatch.setattr(prepare_module, "fit_tokenizer_stream", fit_then_grow)
    config = load_config(None, tiny_overrides(corpus, tmp_path / "run"))
    with pytest.raises(CorpusError, match="the corpus changed while it was being read"):
        prepare_module.prepare_corpus(config, tmp_path / "run" / "cache", progress=None)
    assert not (tmp_path / "run" / "cache" / "meta.json").exists()
