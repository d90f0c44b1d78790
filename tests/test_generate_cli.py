"""`textgen generate` through click's CliRunner (and, for reproducibility, real processes)."""

import json
import os
import stat
import subprocess
import sys
import threading

import pytest
from click.testing import CliRunner

import textgen
from textgen.cli.main import cli


def run(*args, input=None):
    return CliRunner().invoke(cli, [str(a) for a in args], input=input)


def generate(model, *args, input=None):
    return run("generate", "--model", model, *args, input=input)


def error_line(output: str) -> str:
    lines = [line for line in output.splitlines() if line.startswith("Error: ")]
    assert len(lines) == 1, output
    return lines[0]


@pytest.mark.slow  # test_generate checks the same across processes in make test
def test_same_random_seed_same_text_across_processes_and_different_seed_differs(trained_model):
    def command(seed):
        return [sys.executable, "-m", "textgen", "generate", "--model", str(trained_model), "--seed", "ROMEO:",
                "--length", "120", "--temperature", "1.0", "--random-seed", str(seed)]

    runs = [subprocess.Popen(command(seed), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for seed in (5, 5, 6)]
    (first, err), (second, _), (other, _) = [r.communicate(timeout=180) for r in runs]
    assert all(r.returncode == 0 for r in runs), err
    assert first.startswith("ROMEO:") and len(first) == len("ROMEO:") + 120 + 1
    assert first == second and first != other
    assert err == ""  # XLA's start-up lines are kept quiet too


def test_beam_search_prints_the_most_likely_text_and_its_log_probability(trained_model):
    result = generate(trained_model, "--seed", "ROMEO:", "--length", "40", "--beam-width", "4", "--json")
    assert result.exit_code == 0, result.output
    document = json.loads(result.output)
    sample = document["samples"][0]
    assert sample["sampler"] == "beam" and sample["beam_width"] == 4 and len(sample["text"]) == 40
    # beam search draws no random numbers and has no temperature: the settings do not claim either
    assert document["settings"]["random_seed"] is None and document["settings"]["temperatures"] == [None]
    expected = textgen.load(trained_model).log_probability("ROMEO:", sample["text"])
    assert sample["log_probability"] == pytest.approx(expected, abs=1e-3)
    plain = generate(trained_model, "--seed", "ROMEO:", "--length", "40", "--beam-width", "4")
    assert plain.output == "ROMEO:" + sample["text"] + "\n"


def test_streamed_sample_ends_before_the_stop_string(trained_model):
    full = textgen.load(trained_model).generate("ROMEO:", length=200, temperature=0)[0]
    stop = full[20:23]
    result = generate(trained_model, "--seed", "ROMEO:", "--length", "200", "--temperature", "0", "--stop", stop)
    assert result.exit_code == 0, result.output
    assert result.output == "ROMEO:" + full[:full.find(stop)] + "\n"


def test_stop_reads_backslash_n_as_a_newline(trained_model):
    """--stop '\\n\\n' as typed in a shell (backslash, n) ends at a blank line, like a real one."""
    full = textgen.load(trained_model).generate("ROMEO:", length=300, temperature=0)[0]
    line_end = full.index("\n")
    for typed in ("\\n", "\n"):
        result = generate(trained_model, "--seed", "ROMEO:", "--length", "300", "--temperature", "0",
                          "--stop", typed, "--json")
        assert result.exit_code == 0, result.output
        doc = json.loads(result.output)
        assert doc["samples"][0]["text"] == full[:line_end] and doc["samples"][0]["stopped_by"] == "stop"
        assert doc["settings"]["stop"] == ["\n"]


def test_json_reports_settings_timing_and_why_samples_ended(trained_model):
    result = generate(trained_model, "--seed", "A", "--length", "50", "--num-samples", "3", "--top-k", "5",
                      "--random-seed", "9", "--stop", "e", "--json")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    assert [s["sampler"] for s in doc["samples"]] == ["top_k"] * 3 and doc["settings"]["top_k"] == 5
    assert all("e" not in s["text"] for s in doc["samples"])
    assert {s["stopped_by"] for s in doc["samples"]} <= {"stop", "length"}
    assert doc["seconds"] > 0 and doc["tokens_per_second"] > 0


def test_output_file_in_a_missing_directory_fails_before_generating(trained_model, tmp_path):
    result = generate(trained_model, "--seed", "A", "--output", tmp_path / "no" / "such" / "out.txt")
    assert result.exit_code == 1 and "does not exist; create it or choose another" in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_output_never_replaces_the_model_and_keeps_links_and_pipes(trained_model, tmp_path):
    model_bytes = trained_model.read_bytes()
    result = generate(trained_model, "--seed", "A", "--length", "5", "--output", trained_model)
    assert result.exit_code == 2 and "is the model being read; write the samples to another file" in result.output
    assert trained_model.read_bytes() == model_bytes
    result = generate(trained_model.parent, "--seed", "A", "--length", "5", "--output", trained_model)  # a run dir
    assert result.exit_code == 2 and trained_model.read_bytes() == model_bytes

    kept = tmp_path / "kept.txt"
    kept.write_text("old")
    link = tmp_path / "link.txt"
    link.symlink_to(kept)
    result = generate(trained_model, "--seed", "A", "--length", "5", "--random-seed", "1", "--output", link)
    assert result.exit_code == 0, result.output
    assert link.is_symlink() and kept.read_text().startswith("A") and len(kept.read_text()) == 1 + 5 + 1

    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    received = []
    reader = threading.Thread(target=lambda: received.append(fifo.read_text()), daemon=True)
    reader.start()  # a pipe (like /dev/stdout or /dev/null) is written to, not replaced by a file
    result = generate(trained_model, "--seed", "A", "--length", "5", "--random-seed", "1", "--output", fifo)
    reader.join(timeout=30)
    assert result.exit_code == 0, result.output
    assert stat.S_ISFIFO(os.stat(fifo).st_mode) and received == [kept.read_text()]


def test_a_reader_that_leaves_early_does_not_cost_the_output_file(trained_model, tmp_path):
    out = tmp_path / "all.txt"
    command = [sys.executable, "-m", "textgen", "generate", "--model", str(trained_model), "--seed", "ROMEO:",
               "--length", "20000", "--random-seed", "1", "--output", str(out)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    first = process.stdout.read(10)  # as `| head -c 10` does
    process.stdout.close()
    _, errors = process.communicate(timeout=300)
    assert first.startswith(b"ROMEO:") and len(first) == 10
    assert process.returncode == 0 and errors.decode() == ""  # no traceback, no "Exception ignored"
    text = out.read_text()
    assert text.startswith(first.decode()) and len(text) == len("ROMEO:") + 20000 + 1


def test_a_top_k_past_the_vocabulary_samples_from_all_of_it(trained_model):
    texts = [generate(trained_model, "--seed", "A", "--length", "40", "--random-seed", "3", "--top-k", k).output
             for k in ("1000", str(2**32 + 1), "1")]
    assert texts[0] == texts[1] != texts[2]  # 2**32 + 1 once wrapped around to 1 in an int32 tensor


@pytest.mark.parametrize("args, message", [
    (["--temperature", "1e-38"], "temperature must be between 1e-06 and 1e+06 for random sampling, got 1e-38; "
                                 "use 0 for greedy decoding"),
    (["--temperature", "1e39", "--top-k", "5"], "temperature must be between 1e-06 and 1e+06 for top_k sampling"),
    (["--temperature", "-1"], "'--temperature': -1.0 is not in the range x>=0"),
    (["--num-samples", str(10**18)], "num-samples must be at most 100,000 (they run as one batch), "
                                     "got 1,000,000,000,000,000,000; run again for more"),
    (["--top-p", "1.5"], "'--top-p': 1.5 is not in the range 0<x<=1"),
    (["--top-p", "0"], "'--top-p': 0.0 is not in the range 0<x<=1"),
    (["--top-k", "0"], "'--top-k': 0 is not in the range x>=1"),
    (["--beam-width", "0"], "'--beam-width': 0 is not in the range x>=1"),
    (["--length", "-2"], "'--length': -2 is not in the range x>=0"),
    (["--min-length", "30", "--length", "10"], "min-length (30) cannot exceed length (10)"),
    (["--num-samples", "0"], "'--num-samples': 0 is not in the range x>=1"),
    (["--repetition-penalty", "0.9"], "'--repetition-penalty': 0.9 is not in the range x>=1"),
    (["--stop", ""], "a stop string cannot be empty"),
    (["--random-seed", "-1"], "'--random-seed': -1 is not in the range x>=0"),
    (["--top-k", "3", "--top-p", "0.5"], "give either --top-k or --top-p, not both"),
    (["--temperature", "0", "--top-k", "3"], "temperature 0 is greedy decoding"),
    (["--beam-width", "3", "--temperature", "0.7"], "beam search returns the most likely text and does not sample"),
    (["--beam-width", "3", "--top-p", "0.9"], "drop --top-p or --beam-width"),
    (["--beam-width", "3", "--num-samples", "2"], "beam search returns the single most likely text"),
    (["--beam-width", "3", "--repetition-penalty", "1.3"], "drop --repetition-penalty or --beam-width"),
    (["--beam-width", "1000"], "beam width 1000 exceeds the vocabulary size"),
    (["--interactive", "--num-samples", "2", "--json"], "--interactive lets you pick every token and does not "
                                                        "combine with --num-samples, --json"),
    (["--interactive", "--temperature", "0"], "--interactive shows probabilities at a temperature above 0"),
    (["--interactive", "--top-k", "0"], "'--top-k': 0 is not in the range x>=1"),
])
def test_every_bad_value_is_a_one_line_usage_error(trained_model, args, message):
    result = generate(trained_model, "--seed", "A", *args)
    assert result.exit_code == 2, result.output
    assert message in error_line(result.output) and "Traceback" not in result.output


# ---------------------------------------------------------------- --interactive


def test_interactive_picks_types_steps_back_and_stops(trained_model, tmp_path):
    generator = textgen.load(trained_model)
    session = generator.session("ROMEO:")
    first = session.candidates(4)
    session.choose(first[1][0])  # "2": the second candidate
    session.append_text(" the")  # "+ the"
    session.back(1)  # "b"
    second = session.candidates(4)
    session.choose(second[0][0])  # Enter: the most likely
    out = tmp_path / "chosen.txt"
    result = generate(trained_model, "--seed", "ROMEO:", "--interactive", "--top-k", "4", "--output", out,
                      input="2\n+ the\nb\n\nq\n")
    assert result.exit_code == 0, result.output
    token, probability = first[0][1], first[0][2]
    assert f"  1  {token!r:12} {probability:7.2%}" in result.output  # candidates shown with probabilities
    assert result.output.endswith("\nROMEO:" + session.text + "\n")
    assert out.read_text() == "ROMEO:" + session.text + "\n"


def test_interactive_explains_bad_answers_and_stops_at_end_of_input(trained_model):
    result = generate(trained_model, "--seed", "ROMEO:", "--interactive", input="b\n99\n+§\nwhat\n1\nb 0\n")
    assert result.exit_code == 0, result.output
    assert "nothing to step back over" in result.output
    assert "b N steps back N tokens: give N of 1 or more" in result.output  # after a token was chosen
    assert "not understood: '99'" in result.output and "not understood: 'what'" in result.output
    assert "cannot type that: character '§' is not in the model's vocabulary" in result.output
    first = textgen.load(trained_model).session("ROMEO:").candidates(1)[0][1]
    assert result.output.endswith("\nROMEO:" + first + "\n")  # only "1" was applied


def test_interactive_stops_at_length(trained_model):
    result = generate(trained_model, "--seed", "A", "--interactive", "--length", "2", input="1\n1\n1\n")
    assert result.exit_code == 0 and "(reached --length 2)" in result.output
    greedy = textgen.load(trained_model).generate("A", length=2, temperature=0)[0]
    assert result.output.endswith("\nA" + greedy + "\n")


def test_a_seed_is_read_like_a_corpus_line_ends_and_byte_order_mark(trained_model):
    """A seed pasted from a Windows file: the model never saw CR (corpora are read without it)."""
    args = ("--length", "40", "--temperature", "1.0", "--random-seed", "4")
    plain = generate(trained_model, "--seed", "ROMEO:\nI will", *args)
    pasted = generate(trained_model, "--seed", "\ufeffROMEO:\r\nI will", *args)
    assert plain.exit_code == pasted.exit_code == 0, pasted.output
    assert pasted.output == plain.output and plain.output.startswith("ROMEO:\nI will")


def test_seed_file_gives_the_same_text_as_seed_and_keeps_its_final_newline(trained_model, tmp_path):
    args = ("--length", "30", "--random-seed", "5")
    seed = tmp_path / "seed.txt"
    seed.write_bytes(b"\xef\xbb\xbfROMEO:\r\nI will")  # a byte-order mark and CRLF, as a Windows editor saves
    by_flag, by_file = generate(trained_model, "--seed", "ROMEO:\nI will", *args), generate(
        trained_model, "--seed-file", seed, *args)
    assert by_flag.exit_code == by_file.exit_code == 0, by_file.output
    assert by_file.output == by_flag.output and by_file.output.startswith("ROMEO:\nI will")
    seed.write_text("ROMEO:\n")
    from_stdin = generate(trained_model, "--seed-file", "-", *args, input=b"ROMEO:\n")
    assert from_stdin.output == generate(trained_model, "--seed-file", seed, *args).output
    assert from_stdin.output.startswith("ROMEO:\n") and from_stdin.exit_code == 0


def test_output_dash_writes_the_samples_once_to_stdout(trained_model, tmp_path):
    args = ("--seed", "A", "--length", "20", "--random-seed", "2", "--num-samples", "2")
    samples = tmp_path / "samples.txt"
    assert generate(trained_model, *args, "--output", samples).exit_code == 0
    result = generate(trained_model, *args, "--output", "-")
    assert result.exit_code == 0, result.output
    assert result.output == samples.read_text()  # as --output writes them, without the display before them
    assert not (tmp_path / "-").exists() and not os.path.exists("-")

