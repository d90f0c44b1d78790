"""The word tokenizer in graph ops: encode and decode equal `WordTokenizer`'s, character for character."""

import json
import re
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from conftest import CORPORA, corpus_files
from textgen.config import TokenizerConfig
from textgen.data.corpus import normalise_text, stream_corpus
from textgen.data.tokenizer import NOSPACE, SPACE, fit_tokenizer_stream
from textgen.export.re2_pattern import CODE_POINTS, SURROGATES, to_re2
from textgen.export.word_graph import GraphWordTokenizer, Unsupported, lower, lowercase_fixes

EVERY_CHARACTER = "".join(chr(cp) for cp in range(CODE_POINTS) if not SURROGATES[0] <= cp < SURROGATES[1])


def read(name, limit=None):
    return "".join(stream_corpus([str(CORPORA / name)]))[:limit]


def word_fit(text, **options):
    return fit_tokenizer_stream([text], TokenizerConfig(level="word", **options))


class Compiled:
    """A tokenizer's graph twin behind tf.functions of unknown batch and length, as an export traces it."""

    def __init__(self, tokenizer):
        self.tokenizer, graph = tokenizer, GraphWordTokenizer(tokenizer)
        self.encode = tf.function(graph.encode, input_signature=[tf.TensorSpec([None], tf.string)])
        self.decode = tf.function(graph.decode, input_signature=[
            tf.RaggedTensorSpec([None, None], tf.int32), tf.TensorSpec([None], tf.string),
            tf.TensorSpec([None, None], tf.int32)])

    def check(self, seeds, generated):
        """Encode `seeds` and decode `generated` (one id row per seed) in one call each; compare with Python."""
        seed_ids = self.encode(tf.constant(seeds))
        texts = self.decode(seed_ids, tf.constant(seeds), tf.constant(generated, tf.int32)).numpy()
        for seed, row, ids, text in zip(seeds, seed_ids, generated, texts):
            want = self.tokenizer.encode_lenient(normalise_text(seed))[0]
            assert row.numpy().tolist() == want.tolist(), repr(seed)
            expected = self.tokenizer.decoder(want, normalise_text(seed)).push(np.asarray(ids))
            assert text.decode("utf-8") == expected, (repr(seed), ids)


def pieces(text, count, rng):
    """Varied cuts of `text`: whole paragraphs, mid-line and mid-word cuts, short and long."""
    paragraphs = [p for p in text.split("\n\n") if p.strip()]
    chosen = [paragraphs[i] + "\n\n" for i in rng.choice(len(paragraphs), size=count // 4)]
    for _ in range(count - len(chosen)):
        start = int(rng.integers(0, len(text) - 1))
        chosen.append(text[start:start + int(np.exp(rng.uniform(0, np.log(3000))))])
    return chosen


def generated_ids(tokenizer, rng, rows, length):
    """Random ids, a third of them markers, quotes, newlines and marks whose spacing depends on context."""
    index = {t: i for i, t in enumerate(tokenizer.vocabulary)}
    tricky = [index[t] for t in (SPACE, NOSPACE, '"', "_", "\u00ab", "\u00bb", "\n", ",", "(", "--", "'", ".")
              if t in index]
    ids = rng.integers(1, len(tokenizer.vocabulary), size=(rows, length))
    swap = rng.random((rows, length)) < 0.35
    ids[swap] = rng.choice(tricky, size=int(swap.sum()))
    return ids


# ---------------------------------------------------------------- Python's classes, code point by code point


@pytest.mark.parametrize("python_class", [r"\w", r"\W", r"\d", r"\D", r"\s", r"\S", r"[^\W_]", ".", r"(?s:.)",
                                          r"[^\S\n\u00a0\u202f]", r"(?a)\w", r"(?a)[^\s]", r"[a-z\d\u00e0-\u00ff]"])
def test_classes_match_pythons_on_every_code_point(python_class):
    kept_by_python = re.sub(python_class, "", EVERY_CHARACTER)
    kept_by_re2 = tf.strings.regex_replace(EVERY_CHARACTER, to_re2(python_class), "").numpy().decode("utf-8")
    assert kept_by_re2 == kept_by_python
    assert 0 < len(kept_by_python) < len(EVERY_CHARACTER) or python_class == r"(?s:.)"


@pytest.mark.parametrize("count", [0x3000, pytest.param(len(EVERY_CHARACTER), marks=pytest.mark.slow)])
def test_the_token_pattern_finds_the_same_tokens_and_gaps_in_every_character(count):
    text = " ".join(EVERY_CHARACTER[i:i + 7] for i in range(0, count, 7)) + "  "
    tokenizer = word_fit("one two")
    gapped, tokens = GraphWordTokenizer(tokenizer)._find_tokens(tf.constant([text]))
    found = tokenizer._regex.findall(text)
    assert [t.decode("utf-8") for t in tokens[0].numpy()] == [token for _, token in found]
    assert gapped[0].numpy().tolist() == [gap != "" for gap, _ in found]


def test_lowercasing_in_the_graph_equals_pythons_on_every_code_point():
    def graph_lower(text):
        return lower(tf.constant([text]), lowercase_fixes())[0].numpy().decode("utf-8")

    assert graph_lower(EVERY_CHARACTER) == EVERY_CHARACTER.lower()
    # Final sigma, the dotted capital I, the sharp s, NUL characters.
    for word in ["ΟΔΟΣ ΟΔΟΣ.", "İSTANBUL", "ΣΑΣ Σ", "STRASSE ẞ", "A\0B\0\0Σ\0"]:
        assert graph_lower(word) == word.lower()
    assert len(lowercase_fixes()) < 100  # letters newer than TensorFlow's case tables (docs/word-level.md)


# ---------------------------------------------------------------- encode and decode, real text


@pytest.fixture(scope="module")
def moby():
    text = read("moby_dick_four_chapters.txt")
    return text, Compiled(word_fit(text))


def test_seed_edge_cases_in_one_batch(moby):
    text, compiled = moby
    seeds = ["Call me Ishmael. Some years ago", "Call me Ishmael. ", "the king\n", "", "   \t ", "\ufeff\ufeffCall",
             "Call\r\nme\rIshmael\r\n", 'He said, "Don\'t go', '"One," she said. "Two."\n\n"Three',
             "war -- die 'tis ( x ) . Zarathustra", "a\u00a0b\u202f!", "3.14 and 1,000,000 and 1845-1846",
             "Whale\u2019s _italics_ \u00abGuillemets\u00bb\u2026", text[:5000]]
    compiled.check(seeds, generated_ids(compiled.tokenizer, np.random.default_rng(0), len(seeds), 40))


def test_bundled_text_cut_anywhere(moby):
    text, compiled = moby
    rng = np.random.default_rng(1)
    seeds = pieces(text, 120, rng) + [p + " " for p in pieces(text, 20, rng)]
    compiled.check(seeds, generated_ids(compiled.tokenizer, rng, len(seeds), 30))


def test_what_the_model_would_write_next_decodes_the_same(moby):
    text, compiled = moby
    ids = compiled.tokenizer.encode(text)
    starts = np.random.default_rng(2).integers(0, len(ids) - 80, size=60)
    seeds = [compiled.tokenizer.decode(ids[s:s + 20]) for s in starts]
    compiled.check(seeds, np.stack([ids[s + 20:s + 80] for s in starts]))


@pytest.mark.parametrize("name, options", [("die_verwandlung_de.txt", {}),
                                           ("monte_cristo_t1_fr.txt", {"lowercase": True, "max_vocab": 200})])
def test_german_and_french_small_vocabulary_and_lowercase(name, options):
    text = read(name, 60_000)
    compiled = Compiled(word_fit(text, **options))
    rng = np.random.default_rng(3)
    seeds = pieces(text, 60, rng)
    compiled.check(seeds, generated_ids(compiled.tokenizer, rng, len(seeds), 30))
    if options.get("max_vocab"):
        assert sum(compiled.tokenizer.encode(s).tolist().count(compiled.tokenizer.unk_id) for s in seeds) > 50


# Every corpus with the default tokenizer; lowercasing and a small vocabulary (many <unk>) on the
# books whose letters and quotes differ most from English.
CORPUS_CASES = [(path, {}) for path in corpus_files()] + [
    (path, options) for path in corpus_files() if path.stem.endswith(("_de", "_fr"))
    for options in ({"lowercase": True}, {"max_vocab": 200})]


@pytest.mark.slow
@pytest.mark.parametrize("path, options", CORPUS_CASES, ids=lambda v: v.name if hasattr(v, "name") else str(v))
def test_every_bundled_corpus(path, options):
    text = read(path.name)
    compiled = Compiled(word_fit(text, **options))
    rng = np.random.default_rng(4)
    seeds = pieces(text, 400, rng)
    compiled.check(seeds, generated_ids(compiled.tokenizer, rng, len(seeds), 60))
    # The whole book in a call of its own: a batch is padded to its longest seed, and 400 rows
    # padded to a book's length took 12 GB.
    compiled.check([text], generated_ids(compiled.tokenizer, rng, 1, 60))


# ---------------------------------------------------------------- custom patterns


def test_a_custom_pattern_translates():
    text = read("monte_cristo_t1_fr.txt", 20_000) + "\n\u4e2d\u6587\u5b57 l'homme"
    compiled = Compiled(word_fit(text, pattern=r"\w+'|\w+|[\u4e00-\u9fff]|\.{2,}?"))
    assert compiled.tokenizer.tokenize("l'homme") == ["l'", "homme"]
    rng = np.random.default_rng(5)
    seeds = pieces(text, 40, rng) + ["\u4e2d\u6587\u5b57 l'homme"]
    compiled.check(seeds, generated_ids(compiled.tokenizer, rng, len(seeds), 30))


@pytest.mark.parametrize("pattern, reason", [(r"\w+(?=')", "lookahead"), (r"(?<=\s)\w+", "lookbehind"),
                                             (r"\b\w+", "word boundary"), (r"(?i:abc)", "case-insensitive"),
                                             (r"(?>\w+)", "atomic group"), (r"x{1,5000}", "RE2 cannot compile")])
def test_python_only_syntax_is_unsupported_with_a_reason(pattern, reason):
    tokenizer = word_fit("one two", pattern=pattern)
    with pytest.raises(Unsupported, match=reason) as caught:
        GraphWordTokenizer(tokenizer)
    assert "\n" not in str(caught.value)


# ---------------------------------------------------------------- saved, then loaded without textgen


LOAD_WITHOUT_TEXTGEN = """
import json, sys
sys.modules["textgen"] = None
sys.modules["keras"] = None
import tensorflow as tf
seeds, generated = json.loads(sys.stdin.read())
loaded = tf.saved_model.load(sys.argv[1])
out = loaded.run(tf.constant(seeds), tf.constant(generated, tf.int32))
print(json.dumps({"ids": out["ids"].numpy().tolist(), "text": [t.decode() for t in out["text"].numpy()]}))
"""


class Exported(tf.Module):
    def __init__(self, tokenizer):
        super().__init__()
        self.words = GraphWordTokenizer(tokenizer)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string), tf.TensorSpec([None, None], tf.int32)])
    def run(self, seeds, generated):
        ids = self.words.encode(seeds)
        return {"ids": ids.to_tensor(-1), "text": self.words.decode(ids, seeds, generated)}


def test_saved_and_loaded_where_textgen_and_keras_cannot_be_imported(moby, tmp_path):
    text, compiled = moby
    tokenizer = compiled.tokenizer
    tf.saved_model.save(Exported(tokenizer), str(tmp_path / "saved"))
    seeds = ["Call me Ishmael. ", 'He said, "Hi', "", text[:400]]
    generated = generated_ids(tokenizer, np.random.default_rng(6), len(seeds), 25).tolist()
    result = subprocess.run([sys.executable, "-c", LOAD_WITHOUT_TEXTGEN, str(tmp_path / "saved")],
                            input=json.dumps([seeds, generated]), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    out = json.loads(result.stdout.splitlines()[-1])
    for seed, ids, row, text_out in zip(seeds, generated, out["ids"], out["text"]):
        want = tokenizer.encode_lenient(seed)[0].tolist()
        assert row[:len(want)] == want and set(row[len(want):]) <= {-1}
        assert text_out == tokenizer.decoder(want, seed).push(ids)
    assert not any(SPACE in t or NOSPACE in t for t in out["text"])  # markers decode to spacing alone
