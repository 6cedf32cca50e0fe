"""``alray demo --quick`` end to end, as a user runs it: its own process, its own local Ray."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from alray.assistants import list_versions
from alray.project import Project


@pytest.mark.slow
def test_quick_demo_runs_every_step(tmp_path):
    out = tmp_path / "demo"
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "ALRAY_RAY_ADDRESS")}
    env["COLUMNS"] = "160"  # rich wraps at 80 columns without a terminal
    proc = subprocess.run(
        [sys.executable, "-m", "alray", "demo", "--quick", "--out", str(out)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=560,
    )
    text = proc.stdout + proc.stderr
    assert proc.returncode == 0, text[-4000:]
    for k in range(1, 9):
        assert f"[{k}/8]" in text

    # the project stays for the user to explore, with a retrained model
    p = Project.open("demo", store=str(out / "store"))
    versions = [m["version"] for m in list_versions(p, "classifier")]
    assert max(versions) >= 2
    assert p.labels("classifier").num_rows > 0
    assert "ranks_changed" in text and "model v1 → v2" in text
    assert "entropy, datasets A,B" in text
    assert f"--store {out / 'store'}" in text and "serve" in text

    # the backtest's plot and summary
    assert (out / "simulate" / "curve.png").stat().st_size > 0
    summary = json.loads((out / "simulate" / "summary.json").read_text())
    assert [h["heuristic"] for h in summary["heuristics"]] == ["margin", "entropy", "random"]
    result = json.loads((out / "demo.json").read_text())
    assert result["model_version"] >= 2 and result["ranks_changed"]["type"] == "ranks_changed"


def test_demo_replaces_its_own_folder_and_refuses_others(tmp_path):
    from alray.demo import DemoError, _prepare_out

    mine = tmp_path / "mine"
    _prepare_out(str(mine))
    (mine / "old.txt").write_text("from an earlier demo")
    _prepare_out(str(mine))
    assert not (mine / "old.txt").exists() and (mine / ".alray-demo").exists()
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (theirs / "precious.txt").write_text("keep me")
    with pytest.raises(DemoError, match="choose another --out"):
        _prepare_out(str(theirs))
    assert (theirs / "precious.txt").exists()


def test_verdict_needs_the_mean_and_most_seeds():
    from alray.demo import verdict

    assert verdict("margin", {"aulc_vs_random": 0.01, "wins_vs_random": "3/3"}).startswith(
        "margin beats random"
    )
    assert "no clear gain" in verdict("margin", {"aulc_vs_random": 0.01, "wins_vs_random": "1/3"})
    assert "does not beat" in verdict("entropy", {"aulc_vs_random": -0.02, "wins_vs_random": "2/3"})
