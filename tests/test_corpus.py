import codecs
import os

import pytest

from conftest import CORPORA
from textgen.data.corpus import GutenbergFilter, resolve_paths, stream_corpus
from textgen.errors import CorpusError, UsageError


def read(patterns, encoding="utf-8", strip_gutenberg=True):
    """The whole corpus as training reads it, joined."""
    return "".join(stream_corpus(patterns, encoding, strip_gutenberg))


def test_bom_and_crlf_are_normalised(tmp_path):
    path = tmp_path / "crlf.txt"
    path.write_bytes(b"\xef\xbb\xbfline one\r\nline two\rline three\r\n")
    assert read([str(path)]) == "line one\nline two\nline three\n"


def test_gutenberg_boilerplate_is_stripped_from_real_book():
    raw = (CORPORA / "mysterious_island.txt").read_text(encoding="utf-8")
    assert "Project Gutenberg" in raw[:2000]
    text = read([str(CORPORA / "mysterious_island.txt")])
    assert "PROJECT GUTENBERG" not in text.upper()
    assert "THE MYSTERIOUS ISLAND" in text[:2000]
    assert len(text) > 0.9 * len(raw) - 25_000  # only the header and licence went


def test_gutenberg_kept_when_not_asked():
    text = read([str(CORPORA / "mysterious_island.txt")], strip_gutenberg=False)
    assert text.startswith("The Project Gutenberg")


def test_strip_leaves_plain_text_alone():
    gutenberg = GutenbergFilter()
    assert gutenberg.feed("First Citizen:\nHello\n") + gutenberg.finish() == "First Citizen:\nHello\n"


def test_files_directories_and_globs(tmp_path):
    (tmp_path / "a.txt").write_text("alpha")
    sub = tmp_path / "sub"
    sub.mkdir()
    (sub / "b.txt").write_text("beta\n")
    (sub / "image.bin").write_bytes(b"\x00\x01\x02")
    assert read([str(tmp_path / "a.txt")]) == "alpha\n"
    assert [p.name for p in resolve_paths([str(tmp_path)])] == ["a.txt", "b.txt"]
    assert read([str(tmp_path / "**" / "*.txt")]) == "alpha\nbeta\n"


def test_invalid_utf8_names_file_and_offset(tmp_path):
    path = tmp_path / "bad.txt"
    path.write_bytes(b"hello \xff world")
    with pytest.raises(CorpusError, match=r"bad.txt is not valid utf-8 at byte offset 6"):
        read([str(path)])


def test_an_unknown_encoding_is_refused_by_the_reader_as_well_as_the_config(tmp_path):
    """Library callers skip the config's check; the reader names the setting to fix."""
    path = tmp_path / "a.txt"
    path.write_text("hello")
    with pytest.raises(CorpusError, match=r"unknown encoding 'klingon'; .* \(corpus.encoding; --encoding for "):
        read([str(path)], "klingon")
    assert read([str(path)], "latin-1") == "hello\n"  # files end with a line break


def test_a_glob_matching_nothing(tmp_path):
    with pytest.raises(CorpusError, match="matches no files"):
        read([str(tmp_path / "*.nothing")])


def test_a_missing_path_is_a_usage_error(tmp_path):
    with pytest.raises(UsageError, match="corpus path .*missing.txt does not exist; fix corpus.paths"):
        read([str(tmp_path / "missing.txt")])


def test_directory_without_text_files(tmp_path):
    (tmp_path / "x.bin").write_bytes(b"\x00" * 100)
    with pytest.raises(CorpusError, match="holds no text files"):
        read([str(tmp_path)])


def test_nul_bytes_in_named_file(tmp_path):
    path = tmp_path / "nul.txt"
    path.write_bytes(b"abc\x00def")
    with pytest.raises(CorpusError, match="looks binary"):
        read([str(path)])


def test_streaming_in_small_blocks_equals_reading_whole(tmp_path):
    book = (CORPORA / "mysterious_island.txt").read_bytes()
    crlf = tmp_path / "crlf_bom.txt"
    crlf.write_bytes(b"\xef\xbb\xbf" + book.replace(b"\n", b"\r\n"))
    for path in [crlf, *sorted(CORPORA.glob("*.txt"))]:
        for strip in (True, False):
            whole = read([str(path)], strip_gutenberg=strip)
            blocks = list(stream_corpus([str(path)], strip_gutenberg=strip, block_chars=997))
            assert "".join(blocks) == whole
            assert "\r" not in whole and not whole.startswith("\ufeff")
    assert read([str(crlf)]) == read([str(CORPORA / "mysterious_island.txt")])


def test_invalid_utf8_offset_past_the_first_megabyte(tmp_path):
    path = tmp_path / "late.txt"
    path.write_bytes("é".encode() * 700_000 + b"\xc3(")
    with pytest.raises(CorpusError, match="at byte offset 1400000"):
        read([str(path)])


def test_progress_reports_bytes_read(tmp_path):
    path = tmp_path / "a.txt"
    path.write_text("x\n" * 5000)
    seen = []
    "".join(stream_corpus([str(path)], block_chars=1000, on_bytes=seen.append))
    assert seen[-1] == 10_000 and seen == sorted(seen)


# --------------------------------------------------------------------------- files that are not text files

def test_a_fifo_or_device_named_directly_is_refused_unopened(tmp_path):
    fifo = tmp_path / "corpus.fifo"
    os.mkfifo(fifo)  # opening it for reading would block until a writer came
    with pytest.raises(UsageError, match=r"corpus path .*corpus.fifo is not a regular file \(a FIFO\)"):
        resolve_paths([str(fifo)])
    for encoding in ("utf-8", "utf-16-le"):  # /dev/zero read as UTF-16 never ends
        with pytest.raises(UsageError, match=r"corpus path /dev/zero is not a regular file \(a character device\)"):
            read(["/dev/zero"], encoding)


def test_a_fifo_in_a_corpus_directory_or_glob_is_skipped_unopened(tmp_path):
    (tmp_path / "a.txt").write_text("text\n")
    os.mkfifo(tmp_path / "b.txt")
    assert resolve_paths([str(tmp_path)]) == [tmp_path / "a.txt"]
    assert resolve_paths([str(tmp_path / "*.txt")]) == [tmp_path / "a.txt"]
    assert read([str(tmp_path)]) == "text\n"


def test_a_glob_matching_only_directories_says_so(tmp_path):
    (tmp_path / "books" / "one").mkdir(parents=True)
    (tmp_path / "books" / "one" / "a.txt").write_text("text\n")
    with pytest.raises(CorpusError, match=r"corpus glob '.*books/\*' matches only directories \(.*books/one\); "
                                          "name the files in them"):
        read([str(tmp_path / "books" / "*")])


def test_an_empty_corpus_path_is_refused(tmp_path):
    with pytest.raises(UsageError, match="holds an empty path, which would read the whole working directory"):
        resolve_paths([""])


# --------------------------------------------------------------------------- encodings

SAMPLE = "Señor Ωmega, the café\nsecond line\n"


@pytest.mark.parametrize("name, written", [("utf_16_le", "utf-16-le"), ("UTF_16_LE", "utf-16-le"),
                                           ("U16", "utf-16"), ("UTF16", "utf-16"), ("utf_32", "utf-32"),
                                           ("U8", "utf-8-sig"), ("UTF", "utf-8")])
def test_encoding_aliases_read_like_their_canonical_names(tmp_path, name, written):
    path = tmp_path / "a.txt"
    path.write_bytes(SAMPLE.encode(written))
    assert read([str(path)], name) == SAMPLE


@pytest.mark.parametrize("written, bom, family", [("utf-16-le", codecs.BOM_UTF16_LE, "utf-16"),
                                                  ("utf-16-be", codecs.BOM_UTF16_BE, "utf-16"),
                                                  ("utf-32-le", codecs.BOM_UTF32_LE, "utf-32")])
@pytest.mark.parametrize("read_as", ["utf-8", "latin-1", "utf_8"])
def test_a_byte_order_mark_names_the_encoding_to_set(tmp_path, written, bom, family, read_as):
    path = tmp_path / "a.txt"
    path.write_bytes(bom + SAMPLE.encode(written))
    with pytest.raises(CorpusError, match=rf"starts with a {family.upper()} byte-order mark but is read as {read_as}; "
                                          rf"set corpus.encoding: {family}"):
        read([str(path)], read_as)
    assert read([str(path)], family) == SAMPLE


# --------------------------------------------------------------------------- a file that changes

@pytest.mark.parametrize("change", ["grows", "shrinks"])
def test_a_file_that_changes_while_it_is_read_is_an_error(tmp_path, change):
    path = tmp_path / "a.txt"
    path.write_text("line of text\n" * 2000)
    changed = []

    def meanwhile(read):  # called as blocks are read: another program writes to the file
        if not changed:
            changed.append(read)
            with path.open("a" if change == "grows" else "r+") as handle:
                handle.write("new words\u00a7 appended\n") if change == "grows" else handle.truncate(100)

    with pytest.raises(CorpusError, match=r"corpus file .*a.txt changed while it was being read \(26,000 bytes at "
                                          r"the start, [\d,]+ at the end\); wait until it is written in full"):
        list(stream_corpus([str(path)], block_chars=1000, on_bytes=meanwhile))
    assert changed
