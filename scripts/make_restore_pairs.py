"""Write case-and-punctuation restoration pairs from books: plain lower-case words -> the sentence.

Each line is `source<TAB>target`: the target is a sentence of a book as printed, the source
the same sentence with its case and punctuation taken away. The rules:

- Books are read with textgen's corpus loader (Project Gutenberg's header and licence removed).
- Paragraphs are separated by blank lines; inside one, runs of whitespace become one space.
- Sentences end at `.`, `!` or `?` (with any closing quotes or brackets after it) followed by
  a space and a capital letter or an opening quote, except after the titles in TITLES
  ("Mr. Darcy" stays whole).
- A sentence is kept if it is 20-160 characters long, has a lower-case letter, has no square
  bracket and at most half its words capitalised: headings ("CHAPTER IV."), titles in a table
  of contents ("The Whale as a Dish.") and the editor's notes ("[Illustration: ...]") are not
  prose. `_underscores_`, Gutenberg's mark for italics, are removed.
- The source is the sentence lower-cased with every character but letters, digits, spaces and
  apostrophes inside words (don't, Bingley's: part of the spelling, not the punctuation)
  turned into a space, and runs of spaces collapsed.
- With --characters-from, a sentence is kept only if each of its characters occurs in those
  pairs files: a held-out book's sentences, which a character model trained on those files
  can read and write (Moby Dick has em dashes and "æ" that the training books lack).
- Repeated sentences are written once. With --max-pairs, that many are drawn at random
  (--seed) and written in book order.

    python scripts/make_restore_pairs.py --books textgen/corpora/pride_and_prejudice.txt \\
        textgen/corpora/mysterious_island.txt --max-pairs 40000 --seed 1 --output textgen/corpora/restore_train.tsv
    python scripts/make_restore_pairs.py --books textgen/corpora/moby_dick.txt --max-pairs 1000 --seed 1 \\
        --characters-from textgen/corpora/restore_train.tsv --output textgen/corpora/restore_val.tsv

An existing output file is replaced only with --overwrite.
"""

from __future__ import annotations

import argparse
import random
import re
import sys
from pathlib import Path
from typing import Iterable, Iterator

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from textgen.data.corpus import stream_corpus  # noqa: E402
from textgen.data.pair_files import read_pairs, write_pairs  # noqa: E402
from textgen.errors import TextgenError  # noqa: E402

MIN_CHARS, MAX_CHARS = 20, 160
TITLES = {"mr", "mrs", "ms", "dr", "st", "capt", "col", "gen", "lieut", "messrs", "rev", "prof", "sr", "jr", "mt"}
_BOUNDARY = re.compile(r"[.!?][\"'’”)\]]*\s+(?=[\"'‘“(\[]*[A-Z])")
_PARAGRAPH_BREAK = re.compile(r"\n[ \t]*\n")
_NOT_KEPT = re.compile(r"[^\w\s'’]|_")  # \w holds letters, digits (and _, removed too)
_LOOSE_APOSTROPHE = re.compile(r"(?<!\w)['’]|['’](?!\w)")


def paragraphs(blocks: Iterable[str]) -> Iterator[str]:
    """The paragraphs of a text given in blocks, whitespace collapsed to single spaces."""
    carry = ""
    for block in blocks:
        parts = _PARAGRAPH_BREAK.split(carry + block)
        carry = parts.pop()
        for part in parts:
            if part.strip():
                yield " ".join(part.split())
    if carry.strip():
        yield " ".join(carry.split())


def sentences(paragraph: str) -> Iterator[str]:
    """The sentences of one paragraph, by the rule in the module docstring."""
    start = 0
    for match in _BOUNDARY.finditer(paragraph):
        words = paragraph[start:match.start()].split()
        if words and words[-1].lstrip("\"'‘“(").lower() in TITLES and paragraph[match.start()] == ".":
            continue  # "Mr. Darcy": the full stop of a title ends no sentence
        yield paragraph[start:match.end()].strip()
        start = match.end()
    if paragraph[start:].strip():
        yield paragraph[start:].strip()


def is_prose(sentence: str) -> bool:
    """Not a heading, a title or an editor's note (the rule in the module docstring)."""
    if "[" in sentence or "]" in sentence or not any(c.islower() for c in sentence):
        return False
    words = [w.lstrip("\"'‘“(") for w in sentence.split()]
    return sum(w[:1].isupper() for w in words) * 2 <= len(words)


def unpunctuated(sentence: str) -> str:
    """The source side: lower case, no punctuation but apostrophes inside words, single spaces."""
    text = _LOOSE_APOSTROPHE.sub(" ", _NOT_KEPT.sub(" ", sentence.lower()))
    return " ".join(text.split())


def restore_pairs(books: list[str], characters: set[str] | None = None) -> list[tuple[str, str]]:
    """(source, target) for every kept sentence of the books, in order, each sentence once;
    with `characters`, only sentences made of them."""
    pairs, seen = [], set()
    for book in books:
        for paragraph in paragraphs(stream_corpus([book])):
            for sentence in sentences(paragraph.replace("_", "")):
                if not MIN_CHARS <= len(sentence) <= MAX_CHARS or sentence in seen:
                    continue
                if not is_prose(sentence) or (characters is not None and not set(sentence) <= characters):
                    continue
                source = unpunctuated(sentence)
                if source:
                    seen.add(sentence)
                    pairs.append((source, sentence))
    return pairs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--books", nargs="+", required=True, help="text files to take the sentences from")
    parser.add_argument("--output", required=True, help="the .tsv file to write")
    parser.add_argument("--max-pairs", type=int, default=None, help="write at most this many pairs, drawn at random")
    parser.add_argument("--seed", type=int, default=1, help="random seed for --max-pairs")
    parser.add_argument("--characters-from", nargs="+", default=None, metavar="PAIRS",
                        help="keep only sentences whose characters all occur in these pairs files")
    parser.add_argument("--overwrite", action="store_true", help="replace --output if it exists")
    args = parser.parse_args()
    if args.max_pairs is not None and args.max_pairs < 1:
        parser.error("--max-pairs must be at least 1")
    try:
        characters = None
        if args.characters_from:
            characters = {c for pair in read_pairs(args.characters_from) for text in pair for c in text}
        pairs = restore_pairs(args.books, characters)
        if not pairs:
            sys.exit(f"error: no sentence of {MIN_CHARS}-{MAX_CHARS} characters in {', '.join(args.books)}")
        if args.max_pairs is not None and len(pairs) > args.max_pairs:
            keep = sorted(random.Random(args.seed).sample(range(len(pairs)), args.max_pairs))
            pairs = [pairs[i] for i in keep]
        write_pairs(args.output, pairs, overwrite=args.overwrite)
    except TextgenError as exc:
        sys.exit(f"error: {exc}")
    print(f"{len(pairs):,} pairs written to {args.output}")


if __name__ == "__main__":
    main()
