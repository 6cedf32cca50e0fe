"""alray on a Ray cluster: the autoscaler config, resource planning (GPU path), a real two-node
cluster on this machine (placement, a worker node killed mid-job) and an autoscaled one (Ray's
fake multi-node provider). Both clusters keep the project on an S3-compatible server on
loopback, as a real cluster keeps it in a bucket.

The clusters are started with ``ray start --block`` in their own sessions, on free ports and a
private temp dir, and stopped by killing exactly those sessions: never ``ray stop``, which would
take down every Ray on the machine (other test sessions included). Their drivers run in
subprocesses (tests/_cluster_driver.py) because this process may already hold a local Ray.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from _cluster_driver import kill_session, session_pids
from _net import free_port, free_ports
from _s3 import moto_s3

from alray import families, scoring
from alray.assistants import load_assistant, save_version, script_bytes
from alray.models import build_model
from alray.preprocess import prepare_image
from alray.project import Project, read_uri
from alray.scoring import plan_resources
from alray.settings import load_settings
from alray.synthetic import generate

ROOT = Path(__file__).resolve().parents[1]
DRIVER = ROOT / "tests" / "_cluster_driver.py"
BUCKET = "alray-cluster"
SIZE = 32
CLASSES = ["circle", "square", "triangle"]
N_IMAGES = 160
N_GROW = 800
DRIVER_TIMEOUT_S = 360


# ------------------------------------------------------------------------- cluster.yaml


def test_cluster_yaml_passes_rays_own_validation():
    from ray.autoscaler._private.util import prepare_config, validate_config

    raw = yaml.safe_load((ROOT / "cluster.yaml").read_text())
    config = prepare_config(copy.deepcopy(raw))  # merges the AWS defaults, as `ray up` does
    validate_config(config)  # Ray's JSON schema and cross-field checks
    assert config["provider"]["type"] == "aws"

    types = config["available_node_types"]
    head = types[config["head_node_type"]]
    assert head["resources"] == {"CPU": 0}  # the head never scores or trains
    workers = {k: v for k, v in types.items() if k != config["head_node_type"]}
    assert all(t["min_workers"] == 0 for t in workers.values())
    gpu = [t for t in workers.values() if t["resources"].get("GPU", 0) >= 1]
    cpu = [t for t in workers.values() if not t["resources"].get("GPU")]
    assert gpu and cpu
    assert sum(t["max_workers"] for t in workers.values()) <= config["max_workers"]
    assert 0 < config["idle_timeout_minutes"] <= 30
    assert all("--num-cpus=0" in c for c in config["head_start_ray_commands"] if "ray start" in c)

    # head and CPU nodes: CPU torch; GPU nodes: their own list with the CUDA build
    def installs(cmds):
        return " ".join(c for c in cmds if "pip install" in c)

    common = installs(config["setup_commands"])
    assert '"ray[default,data,serve]==2.60.0"' in common
    assert "torch==2.13.0" in common and "whl/cpu" in common
    assert "-e ~/alray" in common
    for t in gpu:
        own = installs(t["worker_setup_commands"])
        assert "torch==2.13.0" in own and "whl/cpu" not in own
        assert '"ray[default,data,serve]==2.60.0"' in own and "-e ~/alray" in own
    # every file the nodes install from is mounted from the repository
    mounted = {Path(v).parts[-1] for k, v in config["file_mounts"].items() if "alray" in k}
    assert {"alray", "pyproject.toml", "README.md"} <= mounted
    for k, v in config["file_mounts"].items():
        if k.startswith("~/alray"):
            assert (ROOT / v).exists(), f"file_mounts names {v}, which is not in the repository"


# -------------------------------------------------------------------- resource planning


def test_gpus_give_one_gpu_per_replica_and_as_many_replicas_as_gpus():
    r = plan_resources({"CPU": 32.0, "GPU": 4.0}, device="auto")
    assert (r.device, r.num_gpus, r.num_cpus) == ("cuda", 1.0, 1.0)
    assert (r.min_replicas, r.max_replicas) == (1, 4)
    r = plan_resources({"CPU": 32.0, "GPU": 4.0}, device="cuda", min_replicas=2)
    assert (r.device, r.min_replicas, r.max_replicas) == ("cuda", 2, 4)
    # device=cpu keeps replicas on CPUs even when GPUs exist
    r = plan_resources({"CPU": 8.0, "GPU": 2.0}, device="cpu")
    assert (r.device, r.num_gpus, r.max_replicas) == ("cpu", 0.0, 7)


def test_cuda_without_gpus_is_refused_with_a_message_that_says_what_to_do():
    with pytest.raises(RuntimeError, match="no GPU.*auto or cpu.*ALRAY_SCORER_MAX_REPLICAS"):
        plan_resources({"CPU": 8.0}, device="cuda")


def test_cuda_on_an_autoscaling_cluster_waits_for_gpu_nodes():
    # GPU workers at min 0: no GPU yet; an explicit max says how many GPU replicas to ask for
    r = plan_resources({"CPU": 0.0}, device="cuda", max_replicas=3)
    assert (r.device, r.num_gpus, r.min_replicas, r.max_replicas) == ("cuda", 1.0, 1, 3)


def test_cpu_only_leaves_one_cpu_for_the_reads():
    r = plan_resources({"CPU": 8.0}, device="auto")
    assert (r.device, r.num_gpus, r.num_cpus) == ("cpu", 0.0, 1.0)
    assert (r.min_replicas, r.max_replicas) == (1, 7)
    assert plan_resources({"CPU": 2.0}).max_replicas == 1
    assert plan_resources({"CPU": 1.0}).max_replicas == 1
    # replicas started up front never take the last CPU, however many are asked for
    assert plan_resources({"CPU": 4.0}, min_replicas=4).min_replicas == 3


def test_cpu_on_an_autoscaling_cluster_keeps_the_asked_maximum():
    # a 0-CPU head with workers at min 0: the pool starts with one replica and may grow to 3
    r = plan_resources({"CPU": 0.0}, device="auto", min_replicas=1, max_replicas=3)
    assert (r.device, r.min_replicas, r.max_replicas) == ("cpu", 1, 3)
    r = plan_resources({"CPU": 2.0}, device="auto", min_replicas=2, max_replicas=4)
    assert (r.min_replicas, r.max_replicas) == (1, 4)


class _RecordingDataset:
    """Stands in for a Ray Dataset: records the stages the scoring job asks for."""

    def __init__(self, calls):
        self.calls = calls

    def repartition(self, n):
        return self

    def map_batches(self, fn, **kwargs):
        self.calls.append((fn, kwargs))
        return self

    def iter_batches(self, **kwargs):
        return iter(())


def _add_model(project: Project) -> None:
    torch.manual_seed(0)
    net = build_model("classifier", num_classes=len(CLASSES))
    meta = {"classes": CLASSES, "input_size": [SIZE, SIZE], "source": "test"}
    save_version(project, "classifier", script_bytes(net.eval()), meta)


def test_the_scoring_job_asks_ray_data_for_one_gpu_per_replica(tmp_path, monkeypatch):
    """The job's stages on a cluster with GPUs: decode on CPUs, replicas with a GPU each,
    batch size from the settings. Ray itself is faked: this is the plan, not a run."""
    import ray
    import ray.data

    import alray._ray

    generate(str(tmp_path / "images"), 6, size=SIZE, seed=1, datasets=("A",))
    p = Project.create("gpu", store=str(tmp_path / "store"))
    p.add_images(str(tmp_path / "images"))
    _add_model(p)
    calls: list = []
    monkeypatch.setattr(alray._ray, "ensure_ray", lambda *a, **k: None)
    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": 16.0, "GPU": 2.0})
    monkeypatch.setattr(ray.data, "from_arrow", lambda table: _RecordingDataset(calls))

    settings = load_settings(batch_size=24, device="auto")
    scoring.rank(p, "classifier", settings=settings)
    (decode, dkw), (scorer, skw) = calls
    assert decode.__name__ == "decode_batch"
    assert dkw["num_cpus"] == 1 and not dkw.get("num_gpus")
    assert scorer.__name__ == "Scorer"
    assert skw["num_gpus"] == 1.0 and skw["num_cpus"] == 1.0
    assert skw["fn_constructor_kwargs"]["device"] == "cuda"
    assert skw["batch_size"] == dkw["batch_size"] == 24
    pool = skw["compute"]
    assert (pool.min_size, pool.max_size) == (1, 2)

    # the same job on a CPU-only cluster asks for no GPU
    calls.clear()
    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": 4.0})
    scoring.rank(p, "classifier", settings=settings)
    skw = calls[1][1]
    assert not skw["num_gpus"] and skw["fn_constructor_kwargs"]["device"] == "cpu"
    assert skw["compute"].max_size == 3


def test_training_asks_for_a_gpu_when_the_cluster_has_one(monkeypatch):
    """The training task's Ray options on clusters with and without GPUs (Ray faked)."""
    import ray

    import alray._ray
    from alray import training

    asked: list[dict] = []

    class _Task:
        def options(self, **opts):
            asked.append(opts)
            return self

        def remote(self, *args):
            return "ref"

    monkeypatch.setattr(alray._ray, "ensure_ray", lambda *a, **k: None)
    monkeypatch.setattr(ray, "remote", lambda fn: _Task())
    monkeypatch.setattr(ray, "wait", lambda refs, timeout=None: (refs, []))
    monkeypatch.setattr(ray, "get", lambda ref: {"version": 1})
    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": 16.0, "GPU": 2.0})
    assert training.train_on_ray("p", "/tmp/none", "classifier") == {"version": 1}
    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": 4.0})
    training.train_on_ray("p", "/tmp/none", "classifier")
    gpu, cpu = asked
    assert gpu["num_gpus"] == 1 and gpu["num_cpus"] >= 1
    assert "num_gpus" not in cpu and cpu["num_cpus"] == 3  # one CPU left to Ray


# ------------------------------------------------------------------ clusters on this machine


def _node_ports(gcs: int, extra: int = 0) -> tuple[list[str], list[int]]:
    """Every port a node opens, free ones other than the head's ``gcs`` picked here, so that
    several Rays on one machine (other test sessions) never collide; worker ports 0 = the OS
    picks per worker. Also ``extra`` more free ports, distinct from those, for the head's own
    servers."""
    ports = free_ports(6 + extra, avoid=[gcs])
    flags = [
        f"--node-manager-port={ports[0]}",
        f"--object-manager-port={ports[1]}",
        "--min-worker-port=0",
        "--max-worker-port=0",
        f"--dashboard-agent-listen-port={ports[2]}",
        f"--dashboard-agent-grpc-port={ports[3]}",
        f"--runtime-env-agent-port={ports[4]}",
        f"--metrics-export-port={ports[5]}",
    ]
    return flags, ports[6:]


class LocalCluster:
    """Ray nodes started by this test, each ``ray start --block`` in its own session."""

    def __init__(self, env: dict[str, str]):
        # Short: Ray's unix socket paths live under it and must stay under 108 bytes.
        self.temp_dir = tempfile.mkdtemp(prefix="alr", dir="/tmp")
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.env = env
        self.nodes: list[subprocess.Popen] = []

    def start(self, *args: str, head: bool = False) -> subprocess.Popen:
        name = "head" if head else f"worker{len(self.nodes)}"
        ports, (dashboard, client) = _node_ports(self.port, extra=2)
        where = (
            [
                "--head",
                f"--port={self.port}",
                f"--temp-dir={self.temp_dir}",
                "--include-dashboard=false",
                f"--dashboard-port={dashboard}",
                f"--ray-client-server-port={client}",
            ]
            if head
            else [f"--address={self.address}"]
        )
        cmd = [
            str(Path(sys.executable).parent / "ray"),
            "start",
            *where,
            *ports,
            "--object-store-memory=150000000",
            "--disable-usage-stats",
            "--block",
            *args,
        ]
        log = open(os.path.join(self.temp_dir, f"{name}.log"), "w")  # noqa: SIM115
        proc = subprocess.Popen(
            cmd, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        log.close()
        self.nodes.append(proc)
        return proc

    def logs(self) -> str:
        out = []
        for name in sorted(os.listdir(self.temp_dir)):
            if name.endswith(".log"):
                text = Path(self.temp_dir, name).read_text(errors="replace")
                out.append(f"--- {name}\n{text[-3000:]}")
        return "\n".join(out)

    def stop(self) -> None:
        for proc in self.nodes:
            kill_session(proc.pid)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=10)
        left = [pid for proc in self.nodes for pid in session_pids(proc.pid)]
        shutil.rmtree(self.temp_dir, ignore_errors=True)
        assert not left, f"processes of this test's Ray left running: {left}"


@pytest.fixture(scope="module")
def s3_env():
    """A moto S3 server on loopback with one bucket; the AWS variables every process needs."""
    pytest.importorskip("moto.server")
    with moto_s3(BUCKET) as s3:
        yield s3


@pytest.fixture(scope="module")
def s3_projects(s3_env, tmp_path_factory):
    """Projects whose store and images are both in the bucket, each with an untrained model:
    ``s3_projects(name, n)`` makes one once per module."""
    import pyarrow.fs as pafs

    made: dict[str, Project] = {}

    def make(name: str, n: int) -> Project:
        if name not in made:
            local = tmp_path_factory.mktemp(name) / "images"
            generate(str(local), n, size=SIZE, seed=11, datasets=("A", "B"))
            dest = f"{BUCKET}/{name}-images"
            pafs.copy_files(
                str(local), dest, destination_filesystem=s3_env["fs"], use_threads=False
            )
            p = Project.create(name, store=f"s3://{BUCKET}/store?{s3_env['query']}")
            report = p.add_images(f"s3://{dest}?{s3_env['query']}")
            assert report.added == n, report.to_dict()
            _add_model(p)
            made[name] = p
        return made[name]

    return make


def _ray_env(s3_env, **extra: str) -> dict[str, str]:
    env = {
        **os.environ,
        **s3_env["env"],
        "RAY_AUTH_MODE": "disabled",
        "RAY_USAGE_STATS_ENABLED": "0",
        "ALRAY_PROGRESS_BARS": "0",
        **extra,
    }
    for k in ("RAY_ADDRESS", "ALRAY_RAY_ADDRESS"):  # join only the cluster named here
        env.pop(k, None)
    return env


def _drive(cluster: LocalCluster, project: Project, out: Path, *args: str) -> dict:
    cmd = [sys.executable, str(DRIVER), cluster.address, project.store_uri, project.name]
    proc = subprocess.run(
        [*cmd, str(out), *args],
        env=cluster.env,
        capture_output=True,
        text=True,
        timeout=DRIVER_TIMEOUT_S,
        cwd=str(ROOT),
    )
    assert proc.returncode == 0, f"driver failed:\n{proc.stderr[-6000:]}\n{cluster.logs()}"
    return json.loads(out.read_text())


def _plain_scores(project: Project) -> dict[str, float]:
    """The same model in this process, no Ray: the reference for the cluster's scores."""
    a = load_assistant(project, "classifier", device="cpu")
    m = project.unlabeled("classifier")
    pixels, sizes = zip(
        *(prepare_image(read_uri(u), a.input_size) for u in m["uri"].to_pylist()), strict=True
    )
    records = a.predict(np.stack(pixels), np.array(sizes))
    scores = families.image_scores("classifier", records, "margin")
    return dict(zip(m["image_id"].to_pylist(), scores.tolist(), strict=True))


def _assert_ranking(r: dict, reference: dict[str, float]) -> None:
    assert r["skipped"] == 0
    assert sorted(r["image_id"]) == sorted(reference)
    assert r["rank"] == list(range(1, len(reference) + 1))
    np.testing.assert_allclose(
        r["score"], [reference[i] for i in r["image_id"]], rtol=1e-6, atol=1e-9
    )
    assert np.all(np.diff(r["score"]) <= 0)


@pytest.mark.slow
def test_two_nodes_share_the_job_and_survive_losing_one(s3_env, s3_projects, tmp_path):
    """A head (3 CPUs) and a worker node (2 CPUs, its own ``worker_node`` resource): the two
    scorer replicas land one on each node; then the worker node is killed when the first
    scored block reaches the driver, and the job still completes with the same ranking."""
    # Fast node-death detection (defaults take ~15 s); GCS settings of this cluster only.
    health = '{"health_check_period_ms":1000,"health_check_failure_threshold":3}'
    project = s3_projects("fleet", N_IMAGES)
    cluster = LocalCluster(_ray_env(s3_env))
    try:
        cluster.start("--num-cpus=3", f"--system-config={health}", head=True)
        worker = cluster.start("--num-cpus=2", '--resources={"worker_node": 2}')
        report = _drive(
            cluster,
            project,
            tmp_path / "report.json",
            "--nodes=2",
            f"--kill-session={worker.pid}",
            "--min-replicas=2",
            "--max-replicas=2",
        )
    finally:
        cluster.stop()

    nodes = {n["id"]: n for n in report["nodes"]}
    assert len(nodes) == 2
    assert report["cluster_at_start"]["worker_node"] == 2.0
    # undisturbed: one replica on each node, and the ranking of a plain loop
    placed = [s["node"] for s in report["calm_scorers"]]
    assert len(placed) == 2 and set(placed) == set(nodes), placed
    reference = _plain_scores(project)
    _assert_ranking(report["calm"], reference)
    # the worker node really died mid-job, and the job still produced the same ranking
    kill = report["kill"]
    assert kill["killed"] > 0
    [worker_id] = [i for i, n in nodes.items() if n["cpus"] == 2.0]
    assert {n["id"]: n["alive"] for n in report["nodes_after"]}[worker_id] is False
    assert report["stormy"]["image_id"] == report["calm"]["image_id"]
    np.testing.assert_allclose(report["stormy"]["score"], report["calm"]["score"], rtol=1e-9)
    assert report["stormy"]["rank"] == report["calm"]["rank"]


def _most_at_once(spans: list[tuple[int, int]]) -> int:
    """Most intervals (start, end; end 0 = open) overlapping at one time."""
    events = sorted([(a, 1) for a, _ in spans] + [(b, -1) for _, b in spans if b])
    level = most = 0
    for _, step in events:  # at equal times an end (-1) sorts before a start (+1)
        level += step
        most = max(most, level)
    return most


def _fake_cluster_config(gcs_address: str, max_workers: int) -> dict:
    """The full autoscaler config for Ray's fake multi-node provider (the wheel lacks the
    example.yaml that ray.cluster_utils.AutoscalingCluster reads; that helper also runs
    `ray stop --force`, which would stop every Ray on the machine)."""
    return {
        "cluster_name": "alray-fake",
        "max_workers": max_workers,
        "upscaling_speed": 1.0,
        "idle_timeout_minutes": 5,
        "provider": {
            "type": "fake_multinode",
            # Workers join this head (the provider's default is port 6379).
            "gcs_address": gcs_address,
            "use_node_id_as_ip": True,
            "disable_node_updaters": True,
            "disable_launch_config_check": True,
        },
        "available_node_types": {
            "ray.head.default": {"resources": {"CPU": 0}, "node_config": {}, "max_workers": 0},
            "ray.worker.cpu": {
                # two CPUs: a replica and a read task side by side
                "resources": {"CPU": 2, "object_store_memory": 150_000_000},
                "node_config": {},
                "min_workers": 0,
                "max_workers": max_workers,
            },
        },
        "head_node_type": "ray.head.default",
        "auth": {},
        "docker": {},
        "initialization_commands": [],
        "setup_commands": [],
        "head_setup_commands": [],
        "worker_setup_commands": [],
        "head_start_ray_commands": [],
        "worker_start_ray_commands": [],
        "file_mounts": {},
        "cluster_synced_files": [],
        "file_mounts_sync_continuously": False,
        "rsync_exclude": [],
        "rsync_filter": [],
    }


@pytest.mark.slow
def test_a_rank_job_makes_the_autoscaler_add_workers(s3_env, s3_projects, tmp_path):
    """A 0-CPU head and a 2-CPU worker type at min 0, max 2 (Ray's fake multi-node provider
    starts real raylets on this machine): the job's pending replica and reads make the
    autoscaler add workers, the scorer pool starts at its min of 1 and grows to its max of 2,
    and the ranking is complete."""
    import ray._private.services as services

    project = s3_projects("grow", N_GROW)
    ip = services.get_node_ip_address()
    cluster = LocalCluster(_ray_env(s3_env, RAY_FAKE_CLUSTER="1", AUTOSCALER_UPDATE_INTERVAL_S="1"))
    config = Path(cluster.temp_dir) / "autoscaler.json"
    config.write_text(json.dumps(_fake_cluster_config(f"{ip}:{cluster.port}", max_workers=2)))
    try:
        cluster.start("--num-cpus=0", f"--autoscaling-config={config}", head=True)
        report = _drive(
            cluster, project, tmp_path / "report.json", "--min-replicas=1", "--max-replicas=2"
        )
    finally:
        cluster.stop()

    # the job started on the head alone, which has no CPU at all
    [head] = report["nodes"]
    assert report["cluster_at_start"].get("CPU", 0) == 0
    samples = report["samples"]
    # the autoscaler added workers for the job, within its max
    assert 2 <= max(s["nodes"] for s in samples) <= 3, samples
    # the pool started at its min and grew to its max, never beyond, all on added workers
    # (from the GCS's record of when each replica was alive; Ray Data may replace one)
    scorers = report["calm_scorers"]
    assert len(scorers) >= 2 and all(s["node"] != head["id"] for s in scorers), scorers
    spans = sorted((s["start_ms"], s["end_ms"]) for s in scorers if s["start_ms"])
    assert _most_at_once(spans) == 2, scorers
    assert spans[0][0] < spans[1][0], scorers  # one replica first, the second added later
    _assert_ranking(report["calm"], _plain_scores(project))
