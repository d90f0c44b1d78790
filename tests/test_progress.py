"""textgen.data.progress: one progress line for long reads outside training."""

import io

import pytest

from textgen.data.progress import ReadProgress, size_text


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
    assert log.getvalue().splitlines() == ["preparing corpus: encoding 2.0 MB of 3.0 MB (0.2 MB/s)",
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
