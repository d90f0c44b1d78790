"""Write date-normalisation pairs: a date as people write it -> the same date in ISO form.

Each line is `human date<TAB>YYYY-MM-DD`, for a date drawn uniformly from 1900-01-01 to
2099-12-31 and written in one of FORMATS (weekday names always match the date), in lower,
upper, title or unchanged case. The same --seed writes the same file. --exclude names pairs
files whose sources must not appear in the output, which makes a held-out test set:

    python scripts/make_date_pairs.py --count 20000 --seed 1 --output textgen/corpora/dates_train.tsv
    python scripts/make_date_pairs.py --count 2000 --seed 2 --exclude textgen/corpora/dates_train.tsv \\
        --output textgen/corpora/dates_test.tsv

An existing output file is replaced only with --overwrite.
"""

from __future__ import annotations

import argparse
import datetime
import random
import string
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from textgen.data.pair_files import read_pairs, write_pairs  # noqa: E402
from textgen.errors import TextgenError  # noqa: E402

FIRST, LAST = datetime.date(1900, 1, 1), datetime.date(2099, 12, 31)
MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
          "November", "December"]
WEEKDAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]

# str.format templates; the fields are filled by `fields` below. English names are spelled out
# here rather than taken from strftime, whose names follow the machine's locale.
FORMATS = [
    "{weekday}, {d} {month} {y}",  # Friday, 4 December 2026
    "{d} {mon} {y}",  # 4 Dec 2026
    "{month} {d}, {y}",  # December 4, 2026
    "the {nth} of {month} {y}",  # the 4th of December 2026
    "{y}/{mm}/{dd}",  # 2026/12/04
    "{dd}.{mm}.{y}",  # 04.12.2026
    "{mon} {d} {y}",  # Dec 4 2026
    "{d} {month} {y}",  # 4 December 2026
    "{wkd} {d} {mon} {y}",  # Fri 4 Dec 2026
    "{weekday}, {month} {d}, {y}",  # Friday, December 4, 2026
    "{month} {nth}, {y}",  # December 4th, 2026
    "{weekday} {nth} {month} {y}",  # Friday 4th December 2026
    "{mon}. {d}, {y}",  # Dec. 4, 2026
    "{d}-{mon}-{y}",  # 4-Dec-2026
    "{y}-{mm}-{dd}",  # 2026-12-04 (already ISO: the model must learn to copy it)
]
CASES = {"lower": str.lower, "upper": str.upper, "title": string.capwords, "as is": str}


def ordinal(day: int) -> str:
    """1st, 2nd, 3rd, 4th, ..., 11th, 12th, 13th, ..., 21st, 22nd, 23rd, ..., 31st."""
    suffix = "th" if 10 <= day % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(day % 10, "th")
    return f"{day}{suffix}"


def fields(date: datetime.date) -> dict[str, str]:
    month, weekday = MONTHS[date.month - 1], WEEKDAYS[date.weekday()]
    return {"weekday": weekday, "wkd": weekday[:3], "month": month, "mon": month[:3], "d": str(date.day),
            "dd": f"{date.day:02d}", "mm": f"{date.month:02d}", "y": str(date.year), "nth": ordinal(date.day)}


def date_pairs(count: int, seed: int, exclude: set[str] = frozenset()) -> list[tuple[str, str]]:
    """`count` pairs (human date, ISO date) drawn with `seed`; no source is in `exclude`."""
    rng = random.Random(seed)
    span = (LAST - FIRST).days
    pairs = []
    while len(pairs) < count:
        date = FIRST + datetime.timedelta(days=rng.randint(0, span))
        template = rng.choice(FORMATS)
        case = CASES[rng.choice(list(CASES))]
        source = case(template.format(**fields(date)))
        if source not in exclude:
            pairs.append((source, date.isoformat()))
    return pairs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, required=True, help="pairs to write")
    parser.add_argument("--seed", type=int, required=True, help="random seed: the same seed writes the same file")
    parser.add_argument("--output", required=True, help="the .tsv file to write")
    parser.add_argument("--exclude", nargs="*", default=[], help="pairs files whose sources the output must not hold")
    parser.add_argument("--overwrite", action="store_true", help="replace --output if it exists")
    args = parser.parse_args()
    if args.count < 1:
        parser.error("--count must be at least 1")
    try:
        exclude = {source for source, _ in read_pairs(args.exclude)} if args.exclude else set()
        write_pairs(args.output, date_pairs(args.count, args.seed, exclude), overwrite=args.overwrite)
    except TextgenError as exc:
        sys.exit(f"error: {exc}")


if __name__ == "__main__":
    main()
