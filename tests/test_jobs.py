"""`ray job submit` entry points on a real Ray head started with `ray start --head`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from _net import free_ports

from alray import ranks
from alray.assistants import list_versions, save_version, script_bytes
from alray.models import build_model
from alray.project import Project
from alray.synthetic import generate

pytestmark = [pytest.mark.ray, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def ray_head(tmp_path_factory):
    """A Ray head of our own (its own ports and temp dir), stopped by its own session dir."""
    tmp = tmp_path_factory.mktemp("rayhead")
    env = {
        **os.environ,
        "RAY_AUTH_MODE": "disabled",
        "RAY_USAGE_STATS_ENABLED": "0",
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
    }
    gcs, dash, client, agent, agent_grpc, node, objects, metrics, runtime_env = free_ports(9)
    cmd = [
        str(Path(sys.executable).parent / "ray"),
        "start",
        "--head",
        f"--port={gcs}",
        "--num-cpus=2",
        "--dashboard-host=127.0.0.1",
        f"--dashboard-port={dash}",
        f"--temp-dir={tmp}",
        "--disable-usage-stats",
        f"--ray-client-server-port={client}",
        f"--dashboard-agent-listen-port={agent}",
        f"--dashboard-agent-grpc-port={agent_grpc}",
        f"--node-manager-port={node}",
        f"--object-manager-port={objects}",
        f"--metrics-export-port={metrics}",
        f"--runtime-env-agent-port={runtime_env}",
        "--min-worker-port=0",
        "--max-worker-port=0",
    ]
    started = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180)
    assert started.returncode == 0, started.stdout[-2000:] + started.stderr[-2000:]
    yield {"env": env, "address": f"http://127.0.0.1:{dash}", "gcs": f"127.0.0.1:{gcs}", "tmp": tmp}
    # Stop exactly this head: every process started for it runs under its session dir.
    subprocess.run(["pkill", "-9", "-f", str(tmp)], check=False)
    subprocess.run(["pkill", "-9", "-f", f"--gcs-address=127.0.0.1:{gcs}"], check=False)
    subprocess.run(["pkill", "-9", "-f", f"gcs_server.*--gcs_server_port={gcs}"], check=False)


def _submit(ray_head: dict, *entrypoint: str, env: dict | None = None) -> None:
    """``ray job submit`` of this repository, as a user runs it; fails with the job's output."""
    cmd = [
        str(Path(sys.executable).parent / "ray"),
        "job",
        "submit",
        f"--address={ray_head['address']}",
        "--working-dir",
        str(REPO),
        "--runtime-env-json",
        json.dumps({"excludes": [".venv", ".git", "*.pt", "alray-store"]}),
        "--",
        "python",
        *entrypoint,
    ]
    proc = subprocess.run(
        cmd, capture_output=True, text=True, env=env or ray_head["env"], timeout=400
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "succeeded" in (proc.stdout + proc.stderr).lower()


def test_rank_job_lands_its_ranking_in_the_store(ray_head, tmp_path):
    generate(str(tmp_path / "images"), 24, size=32, seed=11, datasets=("A", "B"))
    store = str(tmp_path / "store")
    p = Project.create("jobs", store=store)
    p.add_images(str(tmp_path / "images"))
    torch.manual_seed(0)
    net = build_model("classifier", num_classes=3).eval()
    save_version(
        p,
        "classifier",
        script_bytes(net),
        {"classes": ["circle", "square", "triangle"], "input_size": [32, 32]},
    )
    env = {**ray_head["env"], "ALRAY_PROGRESS_BARS": "0", "ALRAY_BATCH_SIZE": "8"}
    _submit(
        ray_head,
        *("jobs/rank.py", "jobs", "--family", "classifier", "--heuristic", "entropy"),
        *("--store", store, "--json"),
        env=env,
    )
    assert ranks.list_versions(p, "classifier") == [1]
    t, meta = ranks.current(p, "classifier")
    assert t.num_rows == 24 and meta["heuristic"] == "entropy" and meta["model_version"] == 1


def test_train_job_stores_a_model_version(ray_head, tmp_path):
    coco = generate(str(tmp_path / "images"), 30, size=32, seed=12, datasets=("A",))
    store = str(tmp_path / "store")
    p = Project.create("trainjob", store=store)
    p.add_images(str(tmp_path / "images"))
    p.import_labels(coco=coco)
    _submit(
        ray_head,
        *("jobs/train.py", "trainjob", "--family", "classifier", "--epochs", "1"),
        *("--input-size", "32", "--store", store),
    )
    [meta] = list_versions(p, "classifier")
    assert meta["version"] == 1 and meta["input_size"] == [32, 32]
    assert meta["metric"]["name"] == "accuracy" and 0.0 <= meta["metric"]["value"] <= 1.0
