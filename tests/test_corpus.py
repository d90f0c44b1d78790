import pytest

from conftest import CORPORA
from textgen.corpus import load_corpus, read_document, resolve_paths, stream_corpus, strip_gutenberg_boilerplate
from textgen.errors import CorpusError


def test_bom_and_crlf_are_normalised(tmp_path):
    path = tmp_path / "crlf.txt"
    path.write_bytes(b"\xef\xbb\xbfline one\r\nline two\rline three\r\n")
    assert load_corpus([str(path)]) == "line one\nline two\nline three\n"


def test_gutenberg_boilerplate_is_stripped_from_real_book():
    raw = (CORPORA / "mysterious_island.txt").read_text(encoding="utf-8")
    assert "Project Gutenberg" in raw[:2000]
    text = read_document(CORPORA / "mysterious_island.txt").text
    assert "PROJECT GUTENBERG" not in text.upper()
    assert "THE MYSTERIOUS ISLAND" in text[:2000]
    assert len(text) > 0.9 * len(raw) - 25_000  # only the header and licence went


def test_gutenberg_kept_when_not_asked():
    text = read_document(CORPORA / "mysterious_island.txt", strip_gutenberg=False).text
    assert text.startswith("The Project Gutenberg")


def test_strip_leaves_plain_text_alone():
    assert strip_gutenberg_boilerplate("First Citizen:\nHello\n") == "First Citizen:\nHello\n"


def test_files_directories_and_globs(tmp_path):
    (tmp_path / "a.txt").write_text("alpha")
    sub = tmp_path / "sub"
    sub.mkdir()
    (sub / "b.txt").write_text("beta\n")
    (sub / "image.bin").write_bytes(b"\x00\x01\x02")
    assert load_corpus([str(tmp_path / "a.txt")]) == "alpha\n"
    assert [p.name for p in resolve_paths([str(tmp_path)])] == ["a.txt", "b.txt"]
    assert load_corpus([str(tmp_path / "**" / "*.txt")]) == "alpha\nbeta\n"


def test_invalid_utf8_names_file_and_offset(tmp_path):
    path = tmp_path / "bad.txt"
    path.write_bytes(b"hello \xff world")
    with pytest.raises(CorpusError, match=r"bad.txt is not valid utf-8 at byte offset 6"):
        load_corpus([str(path)])


def test_an_unknown_encoding_is_refused_by_the_reader_as_well_as_the_config(tmp_path):
    """Library callers skip the config's check; the reader names the setting to fix."""
    path = tmp_path / "a.txt"
    path.write_text("hello")
    with pytest.raises(CorpusError, match=r"unknown encoding 'klingon'; .* \(corpus.encoding; --encoding for "):
        read_document(path, "klingon")
    assert read_document(path, "latin-1").text == "hello\n"  # documents end with a line break


@pytest.mark.parametrize("make, message", [
    (lambda d: d / "missing.txt", "does not exist"),
    (lambda d: (d / "empty.txt").write_text("") and None or d / "empty.txt", "the corpus is empty"),
    (lambda d: d / "*.nothing", "matches no files"),
])
def test_unusable_paths(tmp_path, make, message):
    with pytest.raises(CorpusError, match=message):
        load_corpus([str(make(tmp_path))])


def test_directory_without_text_files(tmp_path):
    (tmp_path / "x.bin").write_bytes(b"\x00" * 100)
    with pytest.raises(CorpusError, match="holds no text files"):
        load_corpus([str(tmp_path)])


def test_nul_bytes_in_named_file(tmp_path):
    path = tmp_path / "nul.txt"
    path.write_bytes(b"abc\x00def")
    with pytest.raises(CorpusError, match="looks binary"):
        load_corpus([str(path)])


def test_streaming_in_small_blocks_equals_reading_whole(tmp_path):
    book = (CORPORA / "mysterious_island.txt").read_bytes()
    crlf = tmp_path / "crlf_bom.txt"
    crlf.write_bytes(b"\xef\xbb\xbf" + book.replace(b"\n", b"\r\n"))
    for path in [crlf, *sorted(CORPORA.glob("*.txt"))]:
        for strip in (True, False):
            whole = load_corpus([str(path)], strip_gutenberg=strip)
            blocks = list(stream_corpus([str(path)], strip_gutenberg=strip, block_chars=997))
            assert "".join(blocks) == whole
            assert "\r" not in whole and not whole.startswith("\ufeff")
    assert load_corpus([str(crlf)]) == load_corpus([str(CORPORA / "mysterious_island.txt")])


def test_invalid_utf8_offset_past_the_first_megabyte(tmp_path):
    path = tmp_path / "late.txt"
    path.write_bytes("é".encode() * 700_000 + b"\xc3(")
    with pytest.raises(CorpusError, match="at byte offset 1400000"):
        load_corpus([str(path)])


def test_progress_reports_bytes_read(tmp_path):
    path = tmp_path / "a.txt"
    path.write_text("x\n" * 5000)
    seen = []
    "".join(stream_corpus([str(path)], block_chars=1000, on_bytes=seen.append))
    assert seen[-1] == 10_000 and seen == sorted(seen)
