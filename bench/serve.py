"""Benchmark: pages of ranks from alray's Serve API against a plain FastAPI app on uvicorn.

Writes a project with a 1,000,000-image ranking straight into a temporary store (a synthetic
Parquet manifest, a rank version written with ``alray.ranks.write_version`` and 1,000 labeled
images that the API must leave out; no image files), then, in the same run and on loopback
only, has 16 concurrent clients (``httpx.AsyncClient``) ask for pages of 50 ranks at random
offsets, for a fixed time per system:

- alray:    ``GET /api/projects/bench/ranks?family=classifier&limit=50&offset=…`` on the Serve
            application (proxy → replica; bearer auth, validation, the replica's rank cache)
- baseline: a plain FastAPI app on uvicorn (another process, like Serve's) that holds the same
            ranks.parquet in memory and answers ``GET /ranks?limit=50&offset=…`` with a slice

Rounds alternate (alray, baseline, alray, …); each system's best round is reported: requests/s,
p50 and p99 latency, and the ratios (targets: throughput >= 0.5x the plain app, p99 <= 2x).

    python bench/serve.py                       # 1,000,000 images, 2 rounds of 10 s each
    python bench/serve.py --n 200000 --seconds 5 --rounds 1
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402

PROJECT = "bench"
FAMILY = "classifier"
TOKEN = "bench-token"
PAGE = 50
CLIENTS = 16
LABELED = 1000


def _free_ports(n: int) -> list[int]:
    """n distinct free ports: every socket is held until all are picked, else the OS may hand
    the same port out twice."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def make_store(root: str, n: int) -> tuple[str, str]:
    """A project with an n-image manifest, a rank version of them and LABELED labeled images;
    returns (store URI, path of the rank version's Parquet)."""
    from alray import ranks
    from alray._fs import unique_name
    from alray.project import LABEL_SCHEMA, MANIFEST_SCHEMA, Project

    store = os.path.join(root, "store")
    p = Project.create(PROJECT, store)
    rng = np.random.default_rng(0)
    ids = [f"{i:016x}" for i in rng.permutation(n)]
    datasets = np.array(["A", "B", "C", "D"])[np.arange(n) % 4]
    names = [f"img_{i:07d}.jpg" for i in range(n)]
    manifest = pa.table(
        {
            "image_id": ids,
            "file_name": names,
            "dataset": datasets,
            "uri": [f"/data/{d}/{f}" for d, f in zip(datasets, names, strict=True)],
            "width": np.full(n, 640, np.int32),
            "height": np.full(n, 480, np.int32),
        },
        schema=MANIFEST_SCHEMA,
    )
    p.store.write_parquet(manifest, "images", unique_name("part-", ".parquet"))
    order = np.argsort(-rng.random(n), kind="stable")
    scores = np.sort(rng.random(n))[::-1]
    table = manifest.select(["image_id", "file_name", "dataset"]).take(pa.array(order))
    table = table.append_column("score", pa.array(scores))
    table = table.append_column("rank", pa.array(np.arange(1, n + 1)))
    meta = {"heuristic": "margin", "reduction": "mean", "model_version": 1}
    version = ranks.write_version(p, FAMILY, table, meta)
    labeled = table["image_id"].slice(0, LABELED * 2).to_pylist()[::2]  # the top, every other
    labels = pa.table(
        {
            "image_id": labeled,
            "seq": [1] * len(labeled),
            "label": ["cat"] * len(labeled),
            "bbox": [None] * len(labeled),
            "rle_size": [None] * len(labeled),
            "rle_counts": [None] * len(labeled),
            "attributes": [None] * len(labeled),
            "source": ["bench"] * len(labeled),
        },
        schema=LABEL_SCHEMA,
    )
    p.store.write_parquet(labels, "labels", FAMILY, unique_name("part-", ".parquet"))
    return store, p.store.path("ranks", FAMILY, f"v{version:04d}", "ranks.parquet")


# ------------------------------------------------------------------------- the plain baseline
def baseline_server(port: int, parquet: str) -> None:
    """The plain app: the ranking in memory, a slice per request (run in its own process)."""
    import pyarrow.parquet as pq
    import uvicorn
    from fastapi import FastAPI, Query

    table = pq.read_table(parquet).select(["rank", "image_id", "file_name", "dataset", "score"])
    table = table.combine_chunks()
    app = FastAPI()

    @app.get("/ranks")
    async def page(limit: int = Query(50, ge=1, le=1000), offset: int = Query(0, ge=0)) -> dict:
        return {
            "total": table.num_rows,
            "offset": offset,
            "limit": limit,
            "items": table.slice(offset, limit).to_pylist(),
        }

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


# ------------------------------------------------------------------------------- the clients
async def load(url: str, params: dict, total: int, seconds: float, seed: int) -> dict:
    """CLIENTS concurrent clients asking for random pages for ``seconds``; latency stats."""
    import httpx

    latencies: list[float] = []
    rng = random.Random(seed)
    limits = httpx.Limits(max_connections=CLIENTS, max_keepalive_connections=CLIENTS)
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with httpx.AsyncClient(limits=limits, headers=headers, timeout=30) as client:

        async def one_client(end: float) -> None:
            while time.perf_counter() < end:
                offset = rng.randrange(0, max(1, total - PAGE))
                t = time.perf_counter()
                r = await client.get(url, params={**params, "limit": PAGE, "offset": offset})
                if r.status_code != 200 or len(r.json()["items"]) != PAGE:
                    raise RuntimeError(f"{url}: {r.status_code} {r.text[:200]}")
                latencies.append(time.perf_counter() - t)

        # warm up: connections open, caches filled
        await asyncio.gather(*(one_client(time.perf_counter() + 1.0) for _ in range(CLIENTS)))
        latencies.clear()
        start = time.perf_counter()
        end = start + seconds
        await asyncio.gather(*(one_client(end) for _ in range(CLIENTS)))
        elapsed = time.perf_counter() - start
    lat = np.array(latencies) * 1000
    return {
        "requests": len(lat),
        "rps": len(lat) / elapsed,
        "p50": float(np.percentile(lat, 50)),
        "p99": float(np.percentile(lat, 99)),
    }


def _wait_up(url: str, timeout: float = 120) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"{url} did not come up")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=1_000_000, help="images in the ranking")
    ap.add_argument("--seconds", type=float, default=10.0, help="measured time per round")
    ap.add_argument("--rounds", type=int, default=2, help="rounds per system (best is shown)")
    ap.add_argument("--baseline-server", nargs=2, metavar=("PORT", "PARQUET"), help="internal")
    args = ap.parse_args()
    if args.baseline_server:
        baseline_server(int(args.baseline_server[0]), args.baseline_server[1])
        return 0

    import httpx
    import ray
    from ray import serve

    from alray.api import build_app

    root = tempfile.mkdtemp(prefix="alray-bench-serve-")
    plain = None
    try:
        print(f"writing a {args.n:,}-image ranking to {root} …", flush=True)
        store, parquet = make_store(root, args.n)
        ray.init(
            address="local",
            num_cpus=2,
            include_dashboard=False,
            log_to_driver=False,
            configure_logging=False,
        )
        port, plain_port = _free_ports(2)
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        serve.run(build_app(store, api_token=TOKEN), name="alray", route_prefix="/")
        plain = subprocess.Popen(
            [sys.executable, __file__, "--baseline-server", str(plain_port), parquet]
        )
        alray_url = f"http://127.0.0.1:{port}/api/projects/{PROJECT}/ranks"
        plain_url = f"http://127.0.0.1:{plain_port}/ranks"
        _wait_up(f"http://127.0.0.1:{port}/healthz")
        _wait_up(f"{plain_url}?limit=1")
        total = args.n - LABELED
        first = httpx.get(
            alray_url,
            params={"family": FAMILY, "limit": 1},
            headers={"Authorization": f"Bearer {TOKEN}"},
        ).json()
        if first["total"] != total:  # the labeled images must be left out
            raise RuntimeError(f"alray serves {first['total']} unlabeled images, not {total}")
        results: dict[str, list[dict]] = {"alray": [], "plain": []}
        for r in range(args.rounds):
            for name, url, params in (
                ("alray", alray_url, {"family": FAMILY}),
                ("plain", plain_url, {}),
            ):
                res = asyncio.run(load(url, params, total, args.seconds, seed=r))
                results[name].append(res)
                print(
                    f"  round {r + 1} {name:5s}: {res['rps']:7.1f} req/s  p50 {res['p50']:6.1f} ms"
                    f"  p99 {res['p99']:6.1f} ms  ({res['requests']} requests)",
                    flush=True,
                )
        a = max(results["alray"], key=lambda x: x["rps"])
        b = max(results["plain"], key=lambda x: x["rps"])
        print(
            f"ranking: {args.n:,} images ({LABELED} labeled, left out by alray); "
            f"{CLIENTS} clients, pages of {PAGE}, {args.seconds:g} s per round, best of "
            f"{args.rounds}"
        )
        for label, x in (("alray Serve API", a), ("plain FastAPI", b)):
            print(
                f"{label:18s}: {x['rps']:7.1f} req/s  p50 {x['p50']:6.1f} ms  "
                f"p99 {x['p99']:6.1f} ms"
            )
        print(f"throughput ratio  : {a['rps'] / b['rps']:5.2f}x  (target >= 0.5)")
        print(f"p99 latency ratio : {a['p99'] / b['p99']:5.2f}x  (target <= 2.0)")
    finally:
        if plain is not None:
            plain.terminate()
            plain.wait(timeout=30)
        if ray.is_initialized():
            serve.shutdown()
            ray.shutdown()
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
