"""Pairs files read, encoded with the reserved marks, split and batched for teacher forcing."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from textgen.config.presets import packaged_corpus
from textgen.config.schema import TokenizerConfig
from textgen.data.pairs import (END, PAD, RESERVED, START, PairTokenizers, encode_pairs, pair_dataset, pair_steps,
                                read_pairs, split_pairs)
from textgen.errors import CorpusError, UsageError

CHAR = TokenizerConfig(level="char")
WORD = TokenizerConfig(level="word")


def write(path, data: bytes):
    path.write_bytes(data)
    return path


# ---- reading

def test_tsv_with_attribution_column_bom_crlf_and_blank_lines(tmp_path):
    path = write(tmp_path / "fra.txt", "\ufeffGo.\tVa !\tCC-BY 2.0 (France) Attribution\r\n\r\n"
                                       "Hi.\tSalut !\r\nRun!\tCours\u202f!\t#906328\n".encode())
    assert read_pairs([str(path)]) == [("Go.", "Va !"), ("Hi.", "Salut !"), ("Run!", "Cours\u202f!")]


def test_lone_carriage_returns_end_lines_too(tmp_path):
    path = write(tmp_path / "mac.tsv", b"a\tb\rc\td\r\rno tab\r")
    with pytest.raises(CorpusError, match=r"line 4: no tab in 'no tab'"):
        read_pairs([str(path)])
    assert read_pairs([str(write(tmp_path / "ok.tsv", b"a\tb\rc\td\r"))]) == [("a", "b"), ("c", "d")]


def test_utf16_files_are_read_when_named(tmp_path):
    path = write(tmp_path / "wide.tsv", "Go.\tVa !\r\nHi.\tSalut !\n".encode("utf-16"))
    assert read_pairs([str(path)], encoding="utf-16") == [("Go.", "Va !"), ("Hi.", "Salut !")]


def test_jsonl_reads_source_and_target_and_ignores_other_fields(tmp_path):
    lines = [json.dumps({"id": 1, "source": "a\tb", "target": "x"}), "", json.dumps({"target": "y", "source": "c"})]
    path = write(tmp_path / "pairs.jsonl", "\n".join(lines).encode())
    assert read_pairs(str(path)) == [("a\tb", "x"), ("c", "y")]


def test_folders_and_globs_read_every_file_in_order(tmp_path):
    write(tmp_path / "b.tsv", b"b\t2\n")
    write(tmp_path / "a.tsv", b"a\t1\n")
    assert read_pairs([str(tmp_path)]) == [("a", "1"), ("b", "2")]
    assert read_pairs([str(tmp_path / "*.tsv")]) == [("a", "1"), ("b", "2")]


@pytest.mark.parametrize("name, data, line, problem", [
    ("p.tsv", b"a\tb\nno tab here\n", 2, "no tab"),
    ("p.tsv", b"a\tb\n\tb\n", 2, "empty source"),
    ("p.tsv", b"a\tb\n\na\t  \tnote\n", 3, "empty target"),
    ("p.tsv", b"a\tb\nc\td\n\xff\xfe\tx\n", 3, "not utf-8"),
    ("p.jsonl", b'{"source": "a", "target": "b"}\n[1, 2]\n', 2, "not an object"),
    ("p.jsonl", b'{"source": "a"}\n', 1, "no string field 'target'"),
    ("p.jsonl", b'{"source": 3, "target": "b"}\n', 1, "int as its string field 'source'"),
    ("p.jsonl", b'{"source": "a", \n', 1, "not json"),
    ("p.jsonl", b'{"source": "", "target": "b"}\n', 1, "empty source"),
])
def test_each_bad_line_is_one_error_naming_file_line_problem_and_fix(tmp_path, name, data, line, problem):
    path = write(tmp_path / name, data)
    with pytest.raises(CorpusError) as info:
        read_pairs([str(path)])
    message = str(info.value)
    assert "\n" not in message
    assert f"{path}, line {line}:" in message
    assert problem in message.lower()
    assert ";" in message  # the fix follows the problem


def test_a_file_with_no_pairs_and_a_missing_file(tmp_path):
    empty = write(tmp_path / "empty.tsv", b"\n\r\n  \n")
    with pytest.raises(CorpusError, match=r"empty.tsv holds no pairs; give lines of source<TAB>target"):
        read_pairs([str(empty)])
    with pytest.raises(UsageError, match="does not exist"):
        read_pairs([str(tmp_path / "missing.tsv")])


def test_a_bad_line_deep_in_a_big_file_is_found_by_streaming(tmp_path):
    path = tmp_path / "big.tsv"
    with open(path, "wb") as out:
        out.write(b"some source sentence\tsome target sentence\n" * 300_000)
        out.write(b"broken line\n")
    with pytest.raises(CorpusError, match=r"line 300001: no tab in 'broken line'"):
        read_pairs([str(path)])


# ---- tokenizers

def test_shared_vocabulary_is_one_tokenizer_for_both_sides():
    pairs = [("abc", "xyz"), ("ab", "zz")]
    shared = PairTokenizers.fit(pairs, CHAR, shared=True)
    assert shared.shared and shared.source.vocabulary == ["a", "b", "c", "x", "y", "z"]
    separate = PairTokenizers.fit(pairs, CHAR, shared=False)
    assert not separate.shared
    assert separate.source.vocabulary == ["a", "b", "c"] and separate.target.vocabulary == ["x", "y", "z"]
    assert separate.source_vocab_size == 3 + RESERVED


def test_model_ids_start_after_the_marks_and_decoding_stops_at_end():
    tokenizers = PairTokenizers.fit([("ab", "xy")], CHAR, shared=False)
    assert tokenizers.encode_source("ba").tolist() == [1 + RESERVED, 0 + RESERVED]
    target = tokenizers.encode_target("xy")
    assert target.dtype == np.int32 and target.min() >= RESERVED
    generated = [START, *target, PAD, END, *target]
    assert tokenizers.decode_target(generated) == "xy"
    assert tokenizers.decode_source([*tokenizers.encode_source("ab"), PAD, PAD]) == "ab"


def test_unknown_tokens_word_level_becomes_unk_char_level_is_named():
    words = PairTokenizers.fit([("the cat sat", "le chat")], WORD, shared=False)
    ids = words.encode_source("the dog sat")
    assert ids[1] == words.source.unk_id + RESERVED
    chars = PairTokenizers.fit([("abc", "abc")], CHAR, shared=True)
    with pytest.raises(UsageError, match=r"'q'.*'z'"):
        chars.encode_source("aqz")


def test_word_vocabularies_never_join_the_end_of_one_sentence_to_the_next():
    tokenizers = PairTokenizers.fit([("one", "un"), ("two", "deux")], WORD, shared=True)
    assert "one" in tokenizers.source.vocabulary and "two" in tokenizers.source.vocabulary
    assert "untwo" not in tokenizers.source.vocabulary and "onetwo" not in tokenizers.source.vocabulary
    assert "\n" not in tokenizers.source.vocabulary  # nothing the pairs do not hold
    assert "\n" not in PairTokenizers.fit([("a b", "c")], CHAR).source.vocabulary


# ---- encoding and splitting

def test_long_pairs_are_dropped_or_truncated_and_counted():
    pairs = [("abc", "ab"), ("abcdef", "a"), ("a", "abcdefg"), ("ab", "abcd")]
    tokenizers = PairTokenizers.fit(pairs, CHAR, shared=True)
    dropped = encode_pairs(pairs, tokenizers, max_length=4)
    assert (len(dropped), dropped.dropped, dropped.truncated) == (2, 2, 0)
    assert dropped.describe() == "2 pairs; 2 longer than 4 tokens dropped"
    cut = encode_pairs(pairs, tokenizers, max_length=4, long_pairs="truncate")
    assert (len(cut), cut.dropped, cut.truncated) == (4, 0, 2)
    assert max(len(t) for t in cut.targets) == 4 and max(len(s) for s in cut.sources) == 4
    assert tokenizers.decode_target(cut.targets[2]) == "abcd"
    assert cut.describe() == "4 pairs; 2 longer than 4 tokens truncated"
    with pytest.raises(CorpusError, match="none of the 4 pairs is left: 4 longer than 1 tokens"):
        encode_pairs(pairs, tokenizers, max_length=1)


def test_pairs_with_characters_the_vocabulary_lacks_are_named_or_dropped_and_counted():
    tokenizers = PairTokenizers.fit([("abc", "abc")], CHAR)
    pairs = [("ab", "ba"), ("aé", "b"), ("c", "cz")]
    with pytest.raises(UsageError, match=r"pair 2 \('aé'\): character 'é' is not in the model's vocabulary"):
        encode_pairs(pairs, tokenizers, max_length=8)
    encoded = encode_pairs(pairs, tokenizers, max_length=8, unknown="drop")
    assert len(encoded) == 1 and encoded.unknown == 2
    assert encoded.describe() == "1 pair; 2 with characters the vocabulary lacks dropped"


def test_split_holds_out_the_tail_or_nothing():
    pairs = [(str(i), str(i)) for i in range(10)]
    encoded = encode_pairs(pairs, PairTokenizers.fit(pairs, CHAR), max_length=4)
    train, held = split_pairs(encoded, 0.2)
    assert [s.tolist() for s in held.sources] == [s.tolist() for s in encoded.sources[8:]]
    assert len(train) == 8
    train, held = split_pairs(encoded, 0.05)
    assert len(train) == 10 and len(held) == 0


# ---- batches

@pytest.fixture(scope="module")
def dates():
    pairs = read_pairs([packaged_corpus("dates_train.tsv")])[:1000]
    tokenizers = PairTokenizers.fit(pairs, CHAR, shared=True)
    return pairs, tokenizers, encode_pairs(pairs, tokenizers, max_length=40)


def test_batches_shift_the_target_and_pad_each_batch_to_its_longest_row(dates):
    pairs, tokenizers, encoded = dates
    batches = list(pair_dataset(encoded, 64, shuffle=False))
    assert len(batches) == pair_steps(1000, 64) == 16
    (source, target_in), target_out = batches[0]
    assert source.dtype == target_in.dtype == target_out.dtype == "int32"
    assert source.shape[0] == 64 and target_in.shape == target_out.shape == (64, 11)  # 10 ISO characters + a mark
    assert source.shape[1] == max(len(s) for s in encoded.sources[:64])
    source, target_in, target_out = source.numpy(), target_in.numpy(), target_out.numpy()
    assert (target_in[:, 0] == START).all() and (target_out[:, -1] == END).all()
    assert (target_in[:, 1:] == target_out[:, :-1]).all()
    for row, (text, iso) in zip(range(64), pairs):
        assert tokenizers.decode_source(source[row]) == text
        assert tokenizers.decode_target(target_out[row]) == iso
        assert (source[row, len(text):] == PAD).all() and (source[row, :len(text)] != PAD).all()


def test_shuffled_batches_are_deterministic_hold_every_pair_and_bucket_lengths(dates):
    _, _, encoded = dates
    first = list(pair_dataset(encoded, 32, shuffle=True, seed=7))
    again = list(pair_dataset(encoded, 32, shuffle=True, seed=7))
    other = list(pair_dataset(encoded, 32, shuffle=True, seed=8))
    assert all((a[1].numpy() == b[1].numpy()).all() for a, b in zip(first, again))
    assert [b[0][0].numpy().tolist() for b in first] != [b[0][0].numpy().tolist() for b in other]
    rows = sorted(tuple(r[r != PAD].tolist()) for b in first for r in b[0][0].numpy())
    assert rows == sorted(tuple(s.tolist()) for s in encoded.sources)  # each pair once a pass
    padding = sum(int((b[0][0].numpy() == PAD).sum()) for b in first)
    in_order = sum(int((b[0][0].numpy() == PAD).sum()) for b in pair_dataset(encoded, 32, shuffle=False))
    assert padding < in_order / 2  # length buckets waste far less than batches of random lengths


def test_repeat_goes_on_past_one_pass(dates):
    _, _, encoded = dates
    assert len(list(pair_dataset(encoded, 256, shuffle=True, seed=1, repeat=True).take(12))) == 12


def test_reading_encoding_and_metrics_need_no_tensorflow():
    code = ("import sys, textgen.data.pairs, textgen.evaluation.text_metrics; "
            "print(sorted({'tensorflow', 'keras'} & set(sys.modules)))")
    root = Path(__file__).resolve().parents[1]
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=root)
    assert result.stdout.strip() == "[]"
