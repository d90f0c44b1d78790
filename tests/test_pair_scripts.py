"""scripts/make_date_pairs.py and scripts/make_restore_pairs.py, run as a user runs them."""

from __future__ import annotations

import calendar
import datetime
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CORPORA = ROOT / "textgen" / "corpora"
MONTHS = "|".join(m.lower() for m in calendar.month_name[1:])
MON = "|".join(m.lower() for m in calendar.month_abbr[1:])
DAYS = "|".join(d.lower() for d in calendar.day_name)
DYS = "|".join(d.lower() for d in calendar.day_abbr)

# The formats the issue asks for, matched on the lower-cased source.
REQUIRED = {
    "Friday, 4 December 2026": rf"({DAYS}), \d{{1,2}} ({MONTHS}) \d{{4}}",
    "4 Dec 2026": rf"\d{{1,2}} ({MON}) \d{{4}}",
    "December 4, 2026": rf"({MONTHS}) \d{{1,2}}, \d{{4}}",
    "the 4th of December 2026": rf"the \d{{1,2}}(st|nd|rd|th) of ({MONTHS}) \d{{4}}",
    "2026/12/04": r"\d{4}/\d\d/\d\d",
    "04.12.2026": r"\d\d\.\d\d\.\d{4}",
    "Dec 4 2026": rf"({MON}) \d{{1,2}} \d{{4}}",
    "4 December 2026": rf"\d{{1,2}} ({MONTHS}) \d{{4}}",
    "Fri 4 Dec 2026": rf"({DYS}) \d{{1,2}} ({MON}) \d{{4}}",
}


def run(script: str, *args, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / script), *map(str, args)],
                            capture_output=True, text=True, cwd=ROOT)
    if check:
        assert result.returncode == 0, result.stderr
    return result


def pairs_of(path: Path) -> list[tuple[str, str]]:
    return [tuple(line.split("\t")) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.fixture(scope="module")
def dates(tmp_path_factory) -> list[tuple[str, str]]:
    out = tmp_path_factory.mktemp("dates") / "dates.tsv"
    run("make_date_pairs.py", "--count", 3000, "--seed", 5, "--output", out)
    return pairs_of(out)


def test_date_pairs_are_deterministic_for_a_seed(tmp_path):
    for name, seed in (("a.tsv", 3), ("b.tsv", 3), ("c.tsv", 4)):
        run("make_date_pairs.py", "--count", 200, "--seed", seed, "--output", tmp_path / name)
    assert (tmp_path / "a.tsv").read_bytes() == (tmp_path / "b.tsv").read_bytes()
    assert (tmp_path / "a.tsv").read_bytes() != (tmp_path / "c.tsv").read_bytes()
    assert len(pairs_of(tmp_path / "a.tsv")) == 200


def test_every_required_format_and_case_appears(dates):
    sources = [s for s, _ in dates]
    for example, pattern in REQUIRED.items():
        assert any(re.fullmatch(pattern, s.lower()) for s in sources), example
    assert any(s.isupper() for s in sources) and any(s.islower() for s in sources)
    assert any(s[0].isupper() and not s.isupper() for s in sources if s[0].isalpha())
    years = [int(iso[:4]) for _, iso in dates]
    assert min(years) >= 1900 and max(years) <= 2099 and max(years) - min(years) > 150


def test_targets_are_the_iso_form_of_the_source_date_with_the_right_weekday(dates):
    for source, iso in dates:
        date = datetime.date.fromisoformat(iso)  # a real date, written YYYY-MM-DD
        assert iso == f"{date.year:04d}-{date.month:02d}-{date.day:02d}"
        text = source.lower()
        assert str(date.year) in text
        month = calendar.month_name[date.month].lower()
        assert month[:3] in text or f"{date.month:02d}" in text, source
        assert re.search(rf"(?<!\d)0?{date.day}(?!\d)", text.replace(str(date.year), "")), source
        named = [d for d in range(7) if re.search(rf"\b{calendar.day_abbr[d].lower()}", text)]
        if named:
            assert named == [date.weekday()], source


def test_date_script_refuses_to_replace_a_file_unless_told(tmp_path):
    out = tmp_path / "mine.tsv"
    out.write_text("my own notes\n")
    result = run("make_date_pairs.py", "--count", 5, "--seed", 1, "--output", out, check=False)
    assert result.returncode != 0
    assert len(result.stderr.strip().splitlines()) == 1 and "--overwrite" in result.stderr
    assert out.read_text() == "my own notes\n"
    run("make_date_pairs.py", "--count", 5, "--seed", 1, "--output", out, "--overwrite")
    assert len(pairs_of(out)) == 5


def test_shipped_date_files_are_what_sources_md_says(tmp_path):
    train = pairs_of(CORPORA / "dates_train.tsv")
    test = pairs_of(CORPORA / "dates_test.tsv")
    assert len(train) == 20_000 and len(test) == 2_000
    assert not {s for s, _ in test} & {s for s, _ in train}  # held out
    run("make_date_pairs.py", "--count", 2000, "--seed", 2, "--exclude", CORPORA / "dates_train.tsv",
        "--output", tmp_path / "test.tsv")
    assert (tmp_path / "test.tsv").read_bytes() == (CORPORA / "dates_test.tsv").read_bytes()


BOOK = """The Title Page Of A Book In Capitals

CHAPTER I.

It is a truth universally acknowledged, that a single man in
possession of a good fortune, must be in want of a wife.

“My dear Mr. Bennet,” said his lady to him one day, “have you heard that
Netherfield Park is let at last?” Mr. Bennet replied that he had not. Short one.

[Illustration: “He came down to see the place”]

She said, “well-bred people don’t do that!” And 'twas true; the _only_ rule.
"""


def test_restore_pairs_follow_the_documented_rules(tmp_path):
    book = tmp_path / "book.txt"
    book.write_text(BOOK, encoding="utf-8")
    run("make_restore_pairs.py", "--books", book, "--output", tmp_path / "out.tsv")
    assert pairs_of(tmp_path / "out.tsv") == [
        ("it is a truth universally acknowledged that a single man in possession of a good fortune must be in want "
         "of a wife",
         "It is a truth universally acknowledged, that a single man in possession of a good fortune, must be in want "
         "of a wife."),
        ("my dear mr bennet said his lady to him one day have you heard that netherfield park is let at last",
         "“My dear Mr. Bennet,” said his lady to him one day, “have you heard that Netherfield Park is let at "
         "last?”"),
        ("mr bennet replied that he had not", "Mr. Bennet replied that he had not."),
        ("she said well bred people don’t do that", "She said, “well-bred people don’t do that!”"),
        ("and twas true the only rule", "And 'twas true; the only rule."),
    ]


def test_restore_script_on_a_slice_of_a_shipped_book(tmp_path):
    text = (CORPORA / "pride_and_prejudice.txt").read_text(encoding="utf-8")
    book = tmp_path / "slice.txt"
    book.write_text(text[100_000:140_000], encoding="utf-8")
    for name in ("a.tsv", "b.tsv"):
        run("make_restore_pairs.py", "--books", book, "--max-pairs", 50, "--seed", 3, "--output", tmp_path / name)
    assert (tmp_path / "a.tsv").read_bytes() == (tmp_path / "b.tsv").read_bytes()
    pairs = pairs_of(tmp_path / "a.tsv")
    assert len(pairs) == 50
    text = " ".join(text[100_000:140_000].split()).replace("_", "")  # as the rules normalise it
    assert [text.index(t) for _, t in pairs] == sorted(text.index(t) for _, t in pairs)  # book order
    for source, target in pairs:
        assert 20 <= len(target) <= 160 and target in text
        assert re.fullmatch(r"[a-z0-9’']+( [a-z0-9’']+)*", source), source
        assert re.sub(r"\W", "", source) == re.sub(r"\W", "", target.lower()), (source, target)
    result = run("make_restore_pairs.py", "--books", book, "--output", tmp_path / "a.tsv", check=False)
    assert result.returncode != 0 and "--overwrite" in result.stderr


def test_restore_keeps_only_sentences_of_known_characters_when_asked(tmp_path):
    book = tmp_path / "book.txt"
    book.write_text(BOOK, encoding="utf-8")
    known = tmp_path / "known.tsv"
    known.write_text("x\t" + BOOK.replace("!", "").replace("\n", " ") + "\n", encoding="utf-8")
    run("make_restore_pairs.py", "--books", book, "--characters-from", known, "--output", tmp_path / "out.tsv")
    targets = [t for _, t in pairs_of(tmp_path / "out.tsv")]
    assert len(targets) == 4 and not any("!" in t for t in targets)


def test_shipped_restore_files_are_what_sources_md_says(tmp_path):
    run("make_restore_pairs.py", "--books", CORPORA / "pride_and_prejudice.txt", CORPORA / "mysterious_island.txt",
        "--max-pairs", 40000, "--seed", 1, "--output", tmp_path / "train.tsv")
    run("make_restore_pairs.py", "--books", CORPORA / "moby_dick.txt", "--max-pairs", 1000, "--seed", 1,
        "--characters-from", CORPORA / "restore_train.tsv", "--output", tmp_path / "val.tsv")
    for made, shipped in (("train.tsv", "restore_train.tsv"), ("val.tsv", "restore_val.tsv")):
        assert (tmp_path / made).read_bytes() == (CORPORA / shipped).read_bytes()


@pytest.mark.parametrize("name, count", [("restore_frankenstein.tsv", 1000), ("restore_alice.tsv", 967)])
def test_other_held_out_books_are_held_out_and_readable_by_the_preset(name, count):
    """The two more books scripts/bench_seq2seq_tasks.py scores restore on (their books are not
    shipped, so SOURCES.md's command cannot be rerun here): as many pairs as it says, no target
    among the training pairs, every character one the training pairs hold, sources in lower case
    with no mark but an apostrophe inside a word."""
    train = pairs_of(CORPORA / "restore_train.tsv")
    known = {ch for pair in train for side in pair for ch in side}
    seen = {target for _, target in train}
    pairs = pairs_of(CORPORA / name)
    assert len(pairs) == count == len({target for _, target in pairs})
    for source, target in pairs:
        assert target not in seen and set(source + target) <= known
        assert source == source.lower() and source == " ".join(source.split())
        assert re.fullmatch(r"(\w+(['’]\w+)*)( \w+(['’]\w+)*)*", source), source
        assert [ch for ch in target.lower() if ch.isalnum()] == [ch for ch in source if ch.isalnum()]
