"""Labelled corpora: reading each label source, the cache's labels, the per-label split and the
training stream's label windows, balance and dropout."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from conftest import CORPORA
from textgen.config import Config, CorpusConfig, TokenizerConfig, load_config
from textgen.data.dataset import make_dataset, make_training_stream, split_labelled
from textgen.data.labels import labels_for_model, read_labelled
from textgen.data.prepare import LABELS_FILE, META_FILE, prepare_corpus
from textgen.errors import ConfigError, CorpusError, UsageError
from textgen.labels import LabelGroup, LabelSpace


def _text(name: str, start: int, size: int) -> str:
    return (CORPORA / name).read_text(encoding="utf-8")[start:start + size]


@pytest.fixture
def folders(tmp_path):
    """data/austen/*.txt, data/melville/*.txt and an unlabelled file directly in data/."""
    root = tmp_path / "data"
    (root / "austen").mkdir(parents=True)
    (root / "melville").mkdir()
    (root / "austen" / "one.txt").write_text(_text("pride_and_prejudice.txt", 2000, 3000), encoding="utf-8")
    (root / "austen" / "two.txt").write_text(_text("pride_and_prejudice.txt", 9000, 1000), encoding="utf-8")
    (root / "melville" / "one.txt").write_text(_text("moby_dick_four_chapters.txt", 2000, 1500), encoding="utf-8")
    (root / "plain.txt").write_text(_text("tinyshakespeare.txt", 0, 800), encoding="utf-8")
    return root


def _jsonl(tmp_path, records, name="docs.jsonl") -> str:
    path = tmp_path / name
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in records) + "\n", encoding="utf-8")
    return str(path)


def _corpus(paths, **keys) -> CorpusConfig:
    return CorpusConfig(paths=tuple(str(p) for p in paths), **keys)


def _config(corpus: CorpusConfig) -> Config:
    return Config(corpus=corpus)


# --------------------------------------------------------------------------- config


def test_label_keys_come_through_set_overrides(folders):
    config = load_config(None, [f"corpus.paths=['{folders}']", "corpus.labels=jsonl",
                                "corpus.label_columns=[author, genre]", "corpus.text_column=body",
                                "corpus.label_balance=0", "corpus.label_dropout=0.25"])
    assert config.corpus.labels == "jsonl"
    assert config.corpus.label_columns == ("author", "genre")
    assert (config.corpus.text_column, config.corpus.label_balance, config.corpus.label_dropout) == ("body", 0.0, 0.25)
    assert load_config(None, ["corpus.label_columns=author"]).corpus.label_columns == ("author",)


@pytest.mark.parametrize("keys, named", [
    ({"labels": "folder"}, "did you mean folders"),
    ({"labels": "folders", "label_columns": ("a", "b")}, "corpus.label_columns"),
    ({"label_columns": ()}, "corpus.label_columns"),
    ({"label_columns": ("a", "a")}, "names a field twice"),
    ({"labels": "csv", "text_column": "label"}, "corpus.text_column"),
    ({"label_balance": 1.5}, "corpus.label_balance"),
    ({"label_dropout": 1.0}, "corpus.label_dropout"),
])
def test_bad_label_keys_are_one_line_config_errors(keys, named):
    with pytest.raises(ConfigError, match=named) as caught:
        CorpusConfig(**keys)
    assert "\n" not in str(caught.value)


# --------------------------------------------------------------------------- reading each source


def test_folders_label_files_by_their_sub_folder_and_leave_the_rest_unlabelled(folders):
    corpus = read_labelled(_corpus([folders], labels="folders", label_columns=("author",)))
    assert corpus.space == LabelSpace((LabelGroup("author", ("any", "austen", "melville")),))
    by_label = {combination: texts for combination, texts in corpus.segments}
    assert [c for c, _ in corpus.segments] == [(0,), (1,), (2,)]  # sorted, any first
    assert by_label[(0,)] == [_text("tinyshakespeare.txt", 0, 800).rstrip("\n") + "\n"]
    assert len(by_label[(1,)]) == 2 and by_label[(1,)][0].startswith(_text("pride_and_prejudice.txt", 2000, 40))
    assert all(text.endswith("\n") for _, texts in corpus.segments for text in texts)


def test_files_label_each_entry_of_the_paths(folders, tmp_path):
    corpus = read_labelled(_corpus([folders / "austen", folders / "melville" / "one.txt", folders / "plain.txt"],
                                   labels="files", file_labels=("austen", "melville", "shakespeare"),
                                   label_columns=("author",)))
    assert corpus.space == LabelSpace((LabelGroup("author", ("any", "austen", "melville", "shakespeare")),))
    by_label = dict(corpus.segments)
    assert len(by_label[(1,)]) == 2 and len(by_label[(2,)]) == 1  # a directory entry labels all its files
    assert by_label[(3,)] == [_text("tinyshakespeare.txt", 0, 800).rstrip("\n") + "\n"]


def test_files_named_for_two_labels_and_miscounted_labels_are_refused(folders):
    with pytest.raises(CorpusError, match="named for two labels"):
        read_labelled(_corpus([folders / "austen", folders / "austen" / "one.txt"], labels="files",
                              file_labels=("austen", "melville")))
    with pytest.raises(ConfigError, match="one label per entry of corpus.paths"):
        _corpus([folders / "austen"], labels="files", file_labels=("austen", "melville"))
    with pytest.raises(ConfigError, match="applies to corpus.labels=files"):
        _corpus([folders / "austen"], labels="folders", file_labels=("austen",))


def test_jsonl_reads_two_groups_numbers_nulls_and_crlf(tmp_path):
    path = _jsonl(tmp_path, [
        {"text": "It is a truth\r\nuniversally", "author": "austen", "genre": "novel"},
        {"text": "Call me Ishmael.", "author": "melville", "genre": 1851},
        {"text": "no labels here", "author": None},
        "",  # blank lines are skipped
        {"text": "only a genre", "genre": "novel"},
    ])
    corpus = read_labelled(_corpus([path], labels="jsonl", label_columns=("author", "genre")))
    assert corpus.space.to_card() == [{"name": "author", "labels": ["any", "austen", "melville"]},
                                      {"name": "genre", "labels": ["any", "1851", "novel"]}]
    assert corpus.segments == [((0, 0), ["no labels here\n"]), ((0, 2), ["only a genre\n"]),
                               ((1, 2), ["It is a truth\nuniversally\n"]), ((2, 1), ["Call me Ishmael.\n"])]


@pytest.mark.parametrize("kind, sep", [("csv", ","), ("tsv", "\t")])
def test_csv_and_tsv_read_the_named_columns(tmp_path, kind, sep):
    austen = _text("pride_and_prejudice.txt", 2000, 300).replace('"', "'")
    rows = [sep.join(["id", "body", "author"]), sep.join(["1", f'"{austen}"', "austen"]),
            sep.join(["2", '"Call me Ishmael, he said."', "melville"]), sep.join(["3", "plain text", ""])]
    path = tmp_path / f"docs.{kind}"
    path.write_bytes(("\r\n".join(rows) + "\r\n").encode("utf-8"))
    corpus = read_labelled(_corpus([path], labels=kind, label_columns=("author",), text_column="body"))
    assert corpus.space.groups[0].labels == ("any", "austen", "melville")
    texts = dict(corpus.segments)
    assert texts[(0,)] == ["plain text\n"]
    assert texts[(1,)] == [austen.rstrip("\n") + "\n"] and "\r" not in texts[(1,)][0]
    assert texts[(2,)] == ["Call me Ishmael, he said.\n"]


@pytest.mark.parametrize("lines, message", [
    (['{"text": "ok", "label": "a"}', '{"text": "broken"'], "docs.jsonl line 2 is not valid JSON"),
    (['["text", "a"]'], "docs.jsonl line 1 is a JSON list, not an object"),
    (['{"body": "x", "label": "a"}'], "line 1 has no text field 'text'"),
    (['{"text": 3, "label": "a"}'], "line 1 has a int in its text field"),
    (['{"text": "x", "label": "any"}'], "line 1: the label 'any' is reserved"),
    (['{"text": "x", "label": " "}'], "line 1: a label is empty"),
    (['{"text": "x", "label": "a,b"}'], "holds ','"),
    (['{"text": "x", "label": ["a"]}'], "holds a list"),
    (['{"text": "x"}', '{"text": "y", "label": null}'], "no document of the corpus has a label in its 'label' field"),
])
def test_bad_jsonl_is_a_one_line_error_naming_file_and_line(tmp_path, lines, message):
    path = _jsonl(tmp_path, lines)
    with pytest.raises(CorpusError, match=message) as caught:
        read_labelled(_corpus([path], labels="jsonl"))
    assert "\n" not in str(caught.value)


def test_a_missing_csv_column_names_the_header(tmp_path):
    path = tmp_path / "docs.csv"
    path.write_text("text,author\nhello,austen\n", encoding="utf-8")
    with pytest.raises(CorpusError, match=r"docs.csv line 1: the header has no column 'genre' \(it has text, author\)"):
        read_labelled(_corpus([path], labels="csv", label_columns=("author", "genre")))


def test_a_csv_row_with_the_wrong_field_count_names_its_line(tmp_path):
    path = tmp_path / "docs.csv"
    path.write_text("text,label\nhello,a\nan, unquoted comma,b\n", encoding="utf-8")
    with pytest.raises(CorpusError, match="docs.csv line 3 has 3 fields but the header 2"):
        read_labelled(_corpus([path], labels="csv"))


def test_a_folder_named_any_is_refused(tmp_path):
    (tmp_path / "any").mkdir()
    (tmp_path / "any" / "a.txt").write_text("some text\n", encoding="utf-8")
    with pytest.raises(CorpusError, match="the label 'any' is reserved"):
        read_labelled(_corpus([tmp_path], labels="folders"))


def test_a_labelled_file_that_is_not_utf8_names_the_file_and_offset(tmp_path):
    path = tmp_path / "docs.jsonl"
    path.write_bytes(b'{"text": "caf\xe9", "label": "a"}\n')
    with pytest.raises(CorpusError, match=r"docs.jsonl is not valid utf-8 at byte offset 13"):
        read_labelled(_corpus([path], labels="jsonl"))


# --------------------------------------------------------------------------- the cache


def test_the_cache_holds_each_tokens_labels_in_sorted_segments(folders, tmp_path):
    config = _config(_corpus([folders], labels="folders", label_columns=("author",)))
    prepared = prepare_corpus(config, tmp_path / "cache", progress=None)
    assert prepared.label_space.groups[0].labels == ("any", "austen", "melville")
    assert prepared.labels.shape == (len(prepared.ids), 1) and prepared.labels.dtype == np.uint16
    assert [length for _, length in prepared.segments] == [801, 3001 + 1001, 1501]  # each file plus its final newline
    for index, (start, length) in enumerate(prepared.segments):
        assert (prepared.labels[start:start + length, 0] == index).all()
    melville = prepared.tokenizer.decode(prepared.ids[prepared.segments[2][0]:])
    assert melville == _text("moby_dick_four_chapters.txt", 2000, 1500) + "\n"
    again = prepare_corpus(config, tmp_path / "cache", progress=None)
    assert again.reused and np.array_equal(again.labels, prepared.labels) and again.segments == prepared.segments


def test_the_cache_is_rebuilt_when_a_label_key_changes(tmp_path):
    path = _jsonl(tmp_path, [{"text": "alpha beta", "author": "a", "genre": "g"},
                             {"text": "gamma delta", "author": "b"}])
    one = _config(_corpus([path], labels="jsonl", label_columns=("author",)))
    assert prepare_corpus(one, tmp_path / "cache", progress=None).label_space.size == 3
    two = _config(dataclasses.replace(one.corpus, label_columns=("author", "genre")))
    rebuilt = prepare_corpus(two, tmp_path / "cache", progress=None)
    assert not rebuilt.reused and rebuilt.labels.shape[1] == 2
    assert prepare_corpus(two, tmp_path / "cache", progress=None).reused
    balanced = _config(dataclasses.replace(two.corpus, label_balance=0.0, label_dropout=0.3))
    assert prepare_corpus(balanced, tmp_path / "cache", progress=None).reused  # training-only keys


def test_a_damaged_labels_file_rebuilds_the_cache(folders, tmp_path):
    config = _config(_corpus([folders], labels="folders"))
    prepared = prepare_corpus(config, tmp_path / "cache", progress=None)
    expected = np.array(prepared.labels)
    del prepared
    raw = bytearray((tmp_path / "cache" / LABELS_FILE).read_bytes())
    raw[0] ^= 1
    (tmp_path / "cache" / LABELS_FILE).write_bytes(bytes(raw))
    again = prepare_corpus(config, tmp_path / "cache", progress=None)
    assert not again.reused and np.array_equal(again.labels, expected)


def test_an_unlabelled_cache_has_no_labels(small_corpus, tmp_path):
    prepared = prepare_corpus(_config(_corpus([small_corpus])), tmp_path / "cache", progress=None)
    assert prepared.labels is None and prepared.label_space is None
    assert not (tmp_path / "cache" / LABELS_FILE).exists()
    assert "labels" not in json.loads((tmp_path / "cache" / META_FILE).read_text())


# --------------------------------------------------------------------------- split and stream


def test_split_holds_out_the_tail_of_every_segment():
    ids = np.arange(1000)
    labels = np.repeat(np.array([[0], [1], [2]], dtype=np.uint16), [100, 600, 300], axis=0)
    train, val, train_labels, val_labels = split_labelled(ids, labels, [(0, 100), (100, 600), (700, 300)], 0.1, 8)
    assert list(val) == [*range(90, 100), *range(640, 700), *range(970, 1000)]
    assert np.bincount(val_labels[:, 0]).tolist() == [10, 60, 30]
    assert len(train) == 900 and np.array_equal(train_labels[:, 0], labels[np.isin(ids, train), 0])


def test_split_holds_out_nothing_when_the_tails_are_shorter_than_a_window():
    ids, labels = np.arange(100), np.zeros((100, 1), np.uint16)
    train, val, _, val_labels = split_labelled(ids, labels, [(0, 50), (50, 50)], 0.1, 20)
    assert len(train) == 100 and len(val) == 0 and val_labels.shape == (0, 1)


def _stream_corpus(n=4000, split=3200):
    """ids equal to their positions, and two label groups that differ along the text."""
    ids = np.arange(n, dtype=np.int32)
    labels = np.zeros((n, 2), dtype=np.uint16)
    labels[:split, 0], labels[split:, 0] = 1, 2
    labels[:, 1] = (np.arange(n) // 7) % 3
    return ids, labels


def test_the_streams_label_windows_are_the_input_tokens_labels():
    ids, labels = _stream_corpus()
    stream = make_training_stream(ids, 16, 8, seed=3, shift_windows=True, labels=labels, label_dropout=0.0)
    for (inputs, input_labels), targets in stream.take(20):
        assert input_labels.shape == (8, 16, 2)
        assert np.array_equal(input_labels.numpy(), labels[inputs.numpy()])  # ids are positions
        assert np.array_equal(targets.numpy(), inputs.numpy() + 1)
    (inputs, input_labels), _ = next(iter(make_dataset(ids, 16, 8, shuffle=False, labels=labels)))
    assert np.array_equal(input_labels.numpy(), labels[inputs.numpy()])


@pytest.mark.parametrize("balance, austen_share", [(1.0, 0.8), (0.5, 2 / 3), (0.0, 0.5)])
def test_balance_draws_each_combination_by_its_size_to_the_power(balance, austen_share):
    ids, labels = _stream_corpus()  # label 1 has 4 times the windows of label 2
    stream = make_training_stream(ids, 16, 16, seed=5, labels=labels[:, :1], label_balance=balance, label_dropout=0)
    firsts = np.concatenate([input_labels.numpy()[:, 0, 0] for (_, input_labels), _ in stream.take(150)])
    assert abs(np.mean(firsts == 1) - austen_share) < 0.04


def test_dropout_replaces_a_share_of_windows_labels_by_any():
    ids, labels = _stream_corpus()
    stream = make_training_stream(ids, 16, 16, seed=5, labels=labels, label_dropout=0.3)
    windows = np.concatenate([input_labels.numpy() for (_, input_labels), _ in stream.take(100)])
    dropped = (windows == 0).all(axis=(1, 2))
    kept = windows[~dropped]
    assert abs(dropped.mean() - 0.3) < 0.05
    assert (kept[:, :, 0] > 0).all()  # a kept window keeps every label; a dropped one loses every group's


def test_a_labelled_stream_restarts_at_any_step_with_the_same_batches():
    ids, labels = _stream_corpus()
    kwargs = dict(seed=11, shift_windows=True, labels=labels, label_balance=0.3, label_dropout=0.2)
    straight = [(x.numpy(), l.numpy()) for (x, l), _ in make_training_stream(ids, 16, 8, **kwargs).take(70)]
    resumed = [(x.numpy(), l.numpy()) for (x, l), _ in
               make_training_stream(ids, 16, 8, start_step=41, **kwargs).take(29)]
    for (x, l), (rx, rl) in zip(straight[41:], resumed):
        assert np.array_equal(x, rx) and np.array_equal(l, rl)


def test_replica_slices_of_a_labelled_stream_make_up_the_global_batch():
    import tensorflow as tf

    ids, labels = _stream_corpus()
    kwargs = dict(seed=7, shift_windows=True, labels=labels, label_balance=0.5, label_dropout=0.3)
    whole = [(x.numpy(), l.numpy()) for (x, l), _ in make_training_stream(ids, 16, 8, **kwargs).take(4)]
    parts = []
    for pipeline in range(2):  # two workers with two replicas each: four slices of two windows
        context = tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=pipeline,
                                             num_replicas_in_sync=4)
        parts.append([(x.numpy(), l.numpy()) for (x, l), _ in
                      make_training_stream(ids, 16, 8, input_context=context, **kwargs).take(8)])
    for step in range(4):
        slices = [parts[0][2 * step], parts[0][2 * step + 1], parts[1][2 * step], parts[1][2 * step + 1]]
        np.testing.assert_array_equal(np.concatenate([x for x, _ in slices]), whole[step][0])
        np.testing.assert_array_equal(np.concatenate([l for _, l in slices]), whole[step][1])


def test_an_unlabelled_stream_is_unchanged_by_the_label_arguments():
    ids, _ = _stream_corpus()
    plain = [x.numpy() for x, _ in make_training_stream(ids, 16, 8, seed=2, shift_windows=True).take(5)]
    again = [x.numpy() for x, _ in make_training_stream(ids, 16, 8, seed=2, shift_windows=True,
                                                        label_balance=0.0, label_dropout=0.5).take(5)]
    assert all(np.array_equal(a, b) for a, b in zip(plain, again))


# --------------------------------------------------------------------------- a model's label space


def test_a_corpus_with_fewer_labels_is_renumbered_into_the_models_space():
    model = LabelSpace((LabelGroup("author", ("any", "austen", "melville", "verne")),))
    corpus = LabelSpace((LabelGroup("author", ("any", "verne")),))
    labels = np.array([[0], [1], [1]], dtype=np.uint16)
    assert labels_for_model(labels, corpus, model, 3, "m.keras")[:, 0].tolist() == [0, 3, 3]
    assert labels_for_model(None, None, model, 2, "m.keras").tolist() == [[0], [0]]
    assert labels_for_model(None, None, None, 2, "m.keras") is None


@pytest.mark.parametrize("corpus, model, message", [
    (LabelSpace((LabelGroup("author", ("any", "poe")),)), LabelSpace((LabelGroup("author", ("any", "verne")),)),
     "m.keras has no label 'poe' in group author"),
    (LabelSpace((LabelGroup("genre", ("any", "x")),)), LabelSpace((LabelGroup("author", ("any", "x")),)),
     "m.keras has the label groups author but the corpus genre"),
    (LabelSpace((LabelGroup("author", ("any", "x")),)), None, "m.keras has no labels"),
])
def test_labels_a_model_cannot_take_are_one_line_errors(corpus, model, message):
    with pytest.raises(UsageError, match=message) as caught:
        labels_for_model(np.zeros((2, 1), np.uint16), corpus, model, 2, "m.keras")
    assert "\n" not in str(caught.value)


def test_a_word_level_cache_encodes_each_segment_on_its_own(tmp_path):
    path = _jsonl(tmp_path, [{"text": "Call me Ishmael.", "label": "melville"},
                             {"text": "It is a truth universally acknowledged", "label": "austen"},
                             {"text": "Some years ago", "label": "melville"}])
    config = Config(corpus=_corpus([path], labels="jsonl"), tokenizer=TokenizerConfig(level="word"))
    prepared = prepare_corpus(config, tmp_path / "cache", progress=None)
    texts = [prepared.tokenizer.decode(prepared.ids[start:start + length]) for start, length in prepared.segments]
    assert texts == ["It is a truth universally acknowledged\n", "Call me Ishmael.\nSome years ago\n"]
    assert prepared.labels[:, 0].tolist() == [1] * prepared.segments[0][1] + [2] * prepared.segments[1][1]
