import json

import pytest

from longrl.logging.plots import main, plot_curves, read_series

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _write_metrics(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def test_read_series_keeps_only_the_steps_that_logged_each_key(tmp_path):
    path = _write_metrics(tmp_path / "metrics.jsonl", [
        {"step": 1, "reward/overall": 0.1}, {"step": 2, "reward/overall": 0.2, "val/accuracy": 0.5}])
    assert read_series(path) == {"reward/overall": ([1, 2], [0.1, 0.2]), "val/accuracy": ([2], [0.5])}


def test_plot_curves_writes_a_png_with_the_default_keys_present(tmp_path):
    path = _write_metrics(tmp_path / "metrics.jsonl", [
        {"step": s, "reward/overall": s / 10, "response_length/mean": 10.0 + s, "actor/kl_loss": 0.01 * s}
        for s in range(1, 6)])
    out = plot_curves(path, tmp_path / "plots" / "curves.png")
    assert out.read_bytes().startswith(PNG_MAGIC)


def test_plot_curves_names_missing_keys_and_the_available_ones(tmp_path):
    path = _write_metrics(tmp_path / "metrics.jsonl", [{"step": 1, "reward/overall": 0.1}])
    with pytest.raises(KeyError, match=r"\['val/accuracy'\] are not logged; choose from \['reward/overall'\]"):
        plot_curves(path, tmp_path / "c.png", keys=["val/accuracy"])


def test_cli_writes_the_png_given_by_out(tmp_path, capsys):
    path = _write_metrics(tmp_path / "metrics.jsonl", [{"step": 1, "perf/throughput": 3.0}])
    main([str(path), "--out", str(tmp_path / "c.png"), "--keys", "perf/throughput"])
    assert (tmp_path / "c.png").read_bytes().startswith(PNG_MAGIC)
    assert capsys.readouterr().out == f"wrote {tmp_path / 'c.png'}\n"
