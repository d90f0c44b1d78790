"""scripts/compare_architectures.py keeps one table per kind of CPU in docs/benchmarks.md."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from textgen.training import distribute

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def compare():
    spec = importlib.util.spec_from_file_location("compare_architectures", ROOT / "scripts" / "compare_architectures.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("flags, kind", [
    ({"avx2", "avx512_bf16", "amx_bf16"}, "AMX CPU"),
    ({"avx2", "avx512f", "avx512_bf16"}, "AVX-512 BF16 CPU"),
    ({"avx2", "avx512f"}, "float32 CPU"),
])
def test_each_kind_of_cpu_has_its_table_in_the_doc(compare, monkeypatch, flags, kind):
    monkeypatch.setattr(distribute, "cpu_flags", lambda: flags)
    begin, end = compare.table_markers()
    assert kind in begin and kind in end
    doc = (ROOT / "docs" / "benchmarks.md").read_text(encoding="utf-8")
    assert doc.count(begin) == 1 and doc.count(end) == 1 and doc.index(begin) < doc.index(end)


def test_every_row_is_a_valid_config_on_top_of_the_base(compare):
    for name, (_, overrides) in compare.ARCHITECTURES.items():
        settings = [f"{key}={compare._yaml(value)}" for key, value in overrides.items()]
        config = compare.load_config(str(compare.BASE), settings)  # raises ConfigError if the row cannot train
        for key, value in overrides.items():
            section, field = key.split(".")
            assert getattr(getattr(config, section), field) == value, (name, key)


def test_a_run_replaces_only_its_own_kind_of_table(compare, monkeypatch, tmp_path):
    doc = tmp_path / "architectures.md"
    blocks = [f"<!-- comparison table, {k}: begin -->\nold {k}\n<!-- comparison table, {k}: end -->"
              for k in ("AMX CPU", "AVX-512 BF16 CPU", "float32 CPU")]
    doc.write_text("intro\n\n" + "\n\nprose\n\n".join(blocks) + "\n", encoding="utf-8")
    monkeypatch.setattr(compare, "DOC", doc)
    monkeypatch.setattr(distribute, "cpu_flags", lambda: {"avx512f", "avx512_bf16"})
    compare.write_table("| new table |")
    text = doc.read_text(encoding="utf-8")
    assert "old AVX-512 BF16 CPU" not in text and "| new table |" in text
    assert "old AMX CPU" in text and "old float32 CPU" in text
    assert text.index("AVX-512 BF16 CPU: begin") < text.index("| new table |") < text.index("AVX-512 BF16 CPU: end")
