"""A scoring job's driver for tests/test_cluster.py, run as its own process.

The pytest process may hold its own local Ray (the shared ``ray_session`` fixture), and a
process joins one Ray at most, so the cluster tests drive their cluster from here:

    python tests/_cluster_driver.py ADDRESS STORE PROJECT OUT.json [--nodes N] [--kill-session PID]
        [--batch-size B] [--min-replicas M] [--max-replicas X]

It joins the cluster, waits for ``--nodes`` alive nodes, ranks the project's classifier images,
and writes a JSON report: the ranking, where the scorer replicas ran (from the GCS actor table,
so the pipeline needs no hooks), and, sampled every half second, the alive nodes and scorer
replicas. ``--kill-session PID`` ranks twice: once undisturbed, then again killing every process
of session PID (a worker node started with ``ray start --block`` in its own session) when the
first scored block reaches the driver.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time

DEADLINE_S = 180


def session_pids(leader: int) -> list[int]:
    """The live processes of session ``leader``: a ``ray start`` node with everything it
    spawned (raylet, agents, workers: workers get their own process group but keep the
    session). Zombies, dead and only waiting to be reaped, are left out."""
    out = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            if os.getsid(int(name)) != leader:
                continue
            with open(f"/proc/{name}/stat") as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
        except OSError:  # gone, or not ours to see
            continue
        if state not in ("Z", "X"):
            out.append(int(name))
    return out


def kill_session(leader: int, timeout_s: float = 30) -> int:
    """SIGKILL every process of session ``leader``, again until none is left (a raylet may
    fork a worker while we kill; a loaded machine takes a while to tear processes down).
    Returns how many signals were sent. Nothing outside the session is touched."""
    sent = 0
    end = time.time() + timeout_s
    while time.time() < end:
        pids = session_pids(leader)
        if not pids:
            break
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
                sent += 1
            except OSError:
                pass
        time.sleep(0.1)
    return sent


def _connect(address: str):
    import ray

    end = time.time() + DEADLINE_S
    while True:
        try:
            ray.init(address=address, log_to_driver=False, configure_logging=False)
            return ray
        except Exception:  # the head is still starting
            if time.time() > end:
                raise
            time.sleep(1)


def _alive_nodes(ray) -> list[dict]:
    return [n for n in ray.nodes() if n["Alive"]]


def _scorers() -> list[dict]:
    import ray._private.state as state

    return [
        {
            "id": aid,
            "node": a["Address"]["NodeID"],
            "state": a["State"],
            "start_ms": a["StartTime"],  # when it became alive (0: never)
            "end_ms": a["EndTime"],  # when it died (0: still alive)
        }
        for aid, a in state.actors().items()
        if "Scorer" in a["ActorClassName"]
    ]


class Sampler(threading.Thread):
    """Every half second: alive nodes (id, CPUs) and alive scorer replicas."""

    def __init__(self, ray):
        super().__init__(daemon=True)
        self.ray = ray
        self.samples: list[dict] = []
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                nodes = _alive_nodes(self.ray)
                alive = [s for s in _scorers() if s["state"] == "ALIVE"]
                self.samples.append(
                    {
                        "t": time.time(),
                        "nodes": len(nodes),
                        "cpus": sum(n["Resources"].get("CPU", 0) for n in nodes),
                        "scorers": len(alive),
                    }
                )
            except Exception:  # a node going away mid-query: sample again
                pass
            self.stop.wait(0.5)


def _ranking(r) -> dict:
    t = r.table
    return {
        "image_id": t["image_id"].to_pylist(),
        "score": t["score"].to_pylist(),
        "rank": t["rank"].to_pylist(),
        "skipped": r.meta["skipped_count"],
    }


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("address")
    ap.add_argument("store")
    ap.add_argument("project")
    ap.add_argument("out")
    ap.add_argument("--nodes", type=int, default=1)
    ap.add_argument("--kill-session", type=int, default=None)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--min-replicas", type=int, default=1)
    ap.add_argument("--max-replicas", type=int, default=None)
    args = ap.parse_args(argv)

    ray = _connect(args.address)
    end = time.time() + DEADLINE_S
    while len(_alive_nodes(ray)) < args.nodes:
        if time.time() > end:
            raise SystemExit(f"only {len(_alive_nodes(ray))} of {args.nodes} nodes came up")
        time.sleep(0.5)

    from alray import scoring
    from alray.project import Project
    from alray.settings import load_settings

    project = Project.open(args.project, store=args.store)
    settings = load_settings(
        batch_size=args.batch_size,
        scorer_min_replicas=args.min_replicas,
        scorer_max_replicas=args.max_replicas,
    )
    report: dict = {
        "nodes": [
            {"id": n["NodeID"], "cpus": n["Resources"].get("CPU", 0)} for n in _alive_nodes(ray)
        ],
        "cluster_at_start": ray.cluster_resources(),
    }
    sampler = Sampler(ray)
    sampler.start()
    calm = scoring.rank(project, "classifier", settings=settings)
    report["calm"] = _ranking(calm)
    report["calm_scorers"] = _scorers()

    if args.kill_session is not None:
        seen_before = {s["id"] for s in _scorers()}
        state = {"killed": 0, "blocks_after_kill": 0, "blocks": 0}

        def kill_on_first_block(done: int, total: int | None) -> None:
            if total is not None:  # the call before any block
                return
            state["blocks"] += 1
            if state["killed"]:
                state["blocks_after_kill"] += 1
            else:
                state["killed"] = kill_session(args.kill_session, timeout_s=10)

        stormy = scoring.rank(
            project, "classifier", settings=settings, progress=kill_on_first_block
        )
        report["stormy"] = _ranking(stormy)
        report["kill"] = state
        report["stormy_scorers"] = [s for s in _scorers() if s["id"] not in seen_before]
        # The GCS marks a killed node dead only after missed health checks; on a loaded
        # machine the job can finish first, so wait (bounded) for it to notice.
        end = time.time() + 60
        while time.time() < end and len(_alive_nodes(ray)) >= args.nodes:
            time.sleep(0.5)
        report["nodes_after"] = [{"id": n["NodeID"], "alive": n["Alive"]} for n in ray.nodes()]
    sampler.stop.set()
    sampler.join(timeout=5)
    report["samples"] = sampler.samples
    with open(args.out, "w") as f:
        json.dump(report, f)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
