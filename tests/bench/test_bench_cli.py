"""``jmipose bench --quick`` end to end on the smallest shapes (``--smallest``: 3 repetitions of tiny
cases, no torch.compile): the JSON follows the schema, the Markdown lists every target and the
tables, the PNG is an image; ``--from-json`` renders the same report again."""

from __future__ import annotations

import json

import pytest
from torch.utils.benchmark import set_torch_threads

from jmipose import cli
from jmipose.bench import records, runner, targets


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    # the command sets torch's threads and OMP_NUM_THREADS: both are restored after it
    with pytest.MonkeyPatch.context() as monkeypatch, set_torch_threads(1):
        monkeypatch.setenv("OMP_NUM_THREADS", "1")
        code = cli.main(["bench", "--quick", "--smallest", "--no-compile", "--threads", "1",
                         "--json", str(out / "r.json"), "--md", str(out / "r.md"),
                         "--plot", str(out / "r.png")])
    assert code == 0
    return out


def test_json_follows_the_schema(quick_run):
    document = json.loads((quick_run / "r.json").read_text())
    assert records.validate(document) == []
    recs = document["records"]
    assert {r["op"] for r in recs} == set(runner.OPS)
    for r in recs:
        assert r["device"] == "cpu" and r["environment"]["threads"] == 1
        assert r["pass"] in ("fwd", "fwd+bwd")
    # ours and the eager baseline ran at every op; compile is skipped with its reason, not dropped
    for op in runner.OPS:
        mine = [r for r in recs if r["op"] == op]
        assert any(r["baseline"] == "none" and r["status"] == "ok" for r in mine), op
        assert any(r["baseline"] == "eager" and r["status"] == "ok" for r in mine), op
        compiled = [r for r in mine if r["baseline"] == "compile"]
        assert compiled and all(r["status"] == "skipped" and "torch.compile" in r["reason"] for r in compiled)
    ok = [r for r in recs if r["status"] == "ok"]
    assert all(r["median_s"] > 0 and r["iqr_s"] >= 0 and r["repeats"] == 3 for r in ok)
    assert all(r["peak_mem_bytes"] is not None for r in ok)
    sdpa = [r for r in recs if r["baseline"] == "sdpa"]
    assert sdpa and all(r["backend"] == "sdpa" for r in sdpa)
    model = [r for r in ok if r["op"] == "model"]
    assert all(r["fps"] == pytest.approx(r["batch"] / r["median_s"]) for r in model)
    tv = [r for r in recs if r["baseline"] == "torchvision"]
    assert tv, "the torchvision baseline must be recorded, measured or skipped"
    try:
        import torchvision  # noqa: F401
    except ImportError:
        assert all(r["status"] == "skipped" and "torchvision" in r["reason"] for r in tv)


def test_markdown_shows_every_target_and_table(quick_run):
    text = (quick_run / "r.md").read_text()
    for target in targets.TARGETS:
        assert target.text in text
    for op in runner.OPS:
        assert f"## {op}" in text
    assert "| shape | pass | backend | median ms |" in text
    assert "| model | part | pass | kernels ms | kernels fps |" in text
    assert "![speed-up per shape and backend](r.png)" in text
    # every target row has one of the three statuses
    rows = [line for line in text.splitlines() if any(t.text in line for t in targets.TARGETS)]
    assert len(rows) == len(targets.TARGETS)
    assert all(any(s in row for s in ("✔ pass", "✘ fail", "– not measured")) for row in rows)


def test_png_is_an_image(quick_run):
    import matplotlib.image

    data = (quick_run / "r.png").read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    image = matplotlib.image.imread(quick_run / "r.png")
    assert image.shape[0] > 100 and image.shape[1] > 100


def test_from_json_renders_the_same_report(quick_run, capsys):
    code = cli.main(["bench", "--from-json", str(quick_run / "r.json"), "--md", str(quick_run / "again.md")])
    assert code == 0
    first = (quick_run / "r.md").read_text().replace("\n![speed-up per shape and backend](r.png)\n", "")
    assert (quick_run / "again.md").read_text() == first


def test_bad_arguments_are_reported(tmp_path, capsys):
    assert cli.main(["bench", "--ops", "A,C"]) == 2
    assert "unknown op 'C'" in capsys.readouterr().err
    (tmp_path / "bad.json").write_text(json.dumps({"schema_version": 1, "records": [{"op": "x"}]}))
    assert cli.main(["bench", "--from-json", str(tmp_path / "bad.json")]) == 2
    assert "not a jmipose bench results file" in capsys.readouterr().err
