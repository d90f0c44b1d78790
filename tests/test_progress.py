"""textgen.data.progress: one progress line for long reads outside training."""

import io

import pytest

from textgen.data.progress import ReadProgress, clock_text, size_text


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_a_log_gets_a_line_every_few_seconds_and_a_final_count():
    clock = iter([0.0, 1.0, 11.0, 12.0, 30.0]).__next__
    log = io.StringIO()
    with ReadProgress("preparing corpus: encoding", 3_000_000, log, clock) as progress:
        progress(1_000_000)  # 1 s in: too soon for a log line
        progress(2_000_000)  # 11 s in: a line
        progress(3_000_000)  # 12 s: too soon again
    assert log.getvalue().splitlines() == ["preparing corpus: encoding 2.0 MB of 3.0 MB (0.2 MB/s, 0:06 left)",
                                           "preparing corpus: encoding 3.0 MB of 3.0 MB (0.1 MB/s)"]


def test_a_terminal_line_is_redrawn_in_place_and_an_error_starts_a_new_line():
    clock = iter([0.0, 1.0, 2.0]).__next__
    screen = Terminal()
    with pytest.raises(KeyboardInterrupt):
        with ReadProgress("scoring -:", None, screen, clock) as progress:
            progress(500)
            progress(20_000)
            raise KeyboardInterrupt
    assert screen.getvalue() == "scoring -: 0.5 KB (0.0 MB/s)\rscoring -: 20.0 KB (0.0 MB/s)\r\n"


def test_no_stream_shows_nothing():
    with ReadProgress("anything", 10, None) as progress:
        progress(5)  # no output and no error


def test_sizes_read_as_people_say_them():
    assert (size_text(20_000), size_text(999_999), size_text(1_100_000)) == ("20.0 KB", "1,000.0 KB", "1.1 MB")


def test_characters_are_counted_with_the_time_left_once_a_rate_is_known():
    clock = iter([0.0, 0.1, 5.0, 65.0, 70.0]).__next__
    screen = Terminal()
    with ReadProgress("scoring held_out.txt:", None, screen, clock, unit="characters") as progress:
        progress(0, 120_000)  # 0.1 s in: too soon to draw
        progress(0, 120_000)  # 5 s in, nothing scored yet: no rate, so no time left
        progress(12_000, 120_000)  # 65 s in: 12,000 in 65 s, so 108,000 more take 585 s
    assert screen.getvalue().split("\r") == [
        "scoring held_out.txt: 0 of 120,000 characters (0 characters/s)",
        "scoring held_out.txt: 12,000 of 120,000 characters (185 characters/s, 9:45 left)",
        "scoring held_out.txt: 12,000 of 120,000 characters (171 characters/s, 10:30 left)\n"]


def test_a_total_learnt_on_the_way_replaces_the_estimate_and_the_end_has_no_time_left():
    clock = iter([0.0, 20.0, 40.0, 41.0]).__next__
    log = io.StringIO()
    with ReadProgress("scoring -:", None, log, clock, unit="characters") as progress:
        progress(1_000)  # stdin: no total yet
        progress(3_000, 3_000)  # the text ended: its size is known, and all of it is scored
    assert log.getvalue().splitlines() == ["scoring -: 1,000 characters (50 characters/s)",
                                           "scoring -: 3,000 of 3,000 characters (75 characters/s)",
                                           "scoring -: 3,000 of 3,000 characters (73 characters/s)"]


def test_an_unknown_unit_is_refused():
    with pytest.raises(ValueError, match="unit must be one of bytes, characters"):
        ReadProgress("x", None, None, unit="lines")


def test_durations_read_as_a_clock_shows_them():
    assert [clock_text(s) for s in (4.6, 59, 60, 754, 3723)] == ["0:05", "0:59", "1:00", "12:34", "1:02:03"]
