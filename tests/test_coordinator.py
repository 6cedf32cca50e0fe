"""The coordinator: family settings (pure), then end to end on the real local Ray: labels →
automatic training → ranks → ``ranks_changed`` (checked against the stored rankings) → signed
webhook deliveries; heuristic changes re-rank without retraining; ``none`` is alphabetical;
stale model versions are not ranked to completion; and a whole Ray restart (in a subprocess,
so the session's Ray is untouched) keeps settings, runs and notifications."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pyarrow.compute as pc
import pytest
import torch

from alray import family_settings as fset
from alray import ranking, ranks
from alray._fs import Store
from alray.assistants import list_versions, save_version, script_bytes
from alray.coordinator import Client, kill_coordinator, write_inbox
from alray.family_settings import FamilySettings, FamilySettingsError
from alray.models import build_model
from alray.project import Project
from alray.synthetic import generate
from alray.webhooks import DELIVERY_HEADER, SIGNATURE_HEADER, verify_signature

SIZE = 32
SECRET = "coordinator-test-secret"


# ---------------------------------------------------------------------- settings (pure)
def test_defaults():
    s = FamilySettings()
    assert (s.heuristic, s.reduction, s.auto, s.retrain_every, s.top_n) == (
        "margin",
        "mean",
        True,
        20,
        100,
    )


@pytest.mark.parametrize(
    "change, match",
    [
        ({"heuristic": "best"}, "heuristic: unknown heuristic 'best'; choose one of: margin, "),
        ({"reduction": "median"}, "reduction: unknown reduction 'median'; choose one of: mean"),
        ({"retrain_every": -1}, "retrain_every"),
        ({"top_n": 0}, "top_n"),
        ({"mc_samples": 1}, "mc_samples"),
        ({"colour": "red"}, "unknown setting.s. colour; settings: heuristic"),
    ],
)
def test_invalid_settings_list_valid_values(change, match):
    with pytest.raises(FamilySettingsError, match=match):
        FamilySettings().with_changes(**change)


def test_retrain_every_zero_means_only_when_asked():
    assert FamilySettings(retrain_every=0).retrain_every is None


def test_settings_round_trip_and_a_bad_hand_edit_keeps_the_good_fields(tmp_path):
    store = Store(str(tmp_path))
    every = fset.load(store)
    assert set(every) == {
        "classifier",
        "tagger",
        "detector",
        "instance_segmentor",
        "semantic_segmentor",
        "attributor",
    }
    every["tagger"] = every["tagger"].with_changes(heuristic="entropy", auto=False)
    fset.save(store, every)
    assert fset.load(store)["tagger"].heuristic == "entropy"
    raw = store.read_json(*fset.SETTINGS_PATH)
    raw["tagger"]["reduction"] = "median"  # broken by hand
    store.write_json(raw, *fset.SETTINGS_PATH)
    tagger = fset.load(store)["tagger"]
    assert (tagger.heuristic, tagger.auto, tagger.reduction) == ("entropy", False, "mean")
    with pytest.raises(FamilySettingsError, match="unknown family 'cat'"):
        fset.check_family("cat")


# ------------------------------------------------------------------------ end to end
class Receiver:
    """Loopback webhook receiver that dedupes by the idempotency id."""

    def __init__(self) -> None:
        self.requests: list[tuple[dict, bytes]] = []
        self.accepted: dict[str, int] = {}
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                body = self.rfile.read(int(self.headers["Content-Length"]))
                outer.requests.append((dict(self.headers), body))
                if not verify_signature(SECRET, body, self.headers.get(SIGNATURE_HEADER)):
                    self.send_response(401)
                else:
                    outer.accepted.setdefault(self.headers[DELIVERY_HEADER], 1)
                    self.send_response(200)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/alray"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def subset_coco(src: str, dst: str, ids: range) -> str:
    """Classifier labels (image-level categories) of some images of a synthetic COCO file."""
    with open(src) as f:
        d = json.load(f)
    keep = set(ids)
    images = [
        {k: v for k, v in im.items() if k != "tags"} for im in d["images"] if im["id"] in keep
    ]
    anns = [a for a in d["annotations"] if a["image_id"] in keep and "bbox" not in a]
    with open(dst, "w") as f:
        json.dump({"images": images, "annotations": anns, "categories": d["categories"]}, f)
    return dst


@pytest.fixture(scope="module")
def env(tmp_path_factory, ray_session):
    root = tmp_path_factory.mktemp("coordinator")
    coco = generate(str(root / "images"), 80, size=SIZE, seed=7)
    name = f"coord-{uuid.uuid4().hex[:6]}"
    p = Project.create(name, store=str(root / "store"))
    p.add_images(str(root / "images"))
    ns = f"test-{uuid.uuid4().hex[:8]}"
    client = Client(name, p.store_uri, namespace=ns, timeout=180)
    rx = Receiver()
    yield {"p": p, "c": client, "coco": coco, "root": root, "rx": rx, "ns": ns}
    kill_coordinator(name, ns)
    rx.server.shutdown()


def _import(env, ids: range) -> dict[str, int]:
    path = subset_coco(env["coco"], str(env["root"] / f"l{ids.start}.json"), ids)
    return env["p"].import_labels(coco=path).images


def _unlabeled_ids(p: Project, version: int) -> list[str]:
    t = ranks.read_version(p, "classifier", version)
    return t.filter(pc.invert(pc.is_in(t["image_id"], p.labeled_ids("classifier"))))[
        "image_id"
    ].to_pylist()


@pytest.mark.ray
def test_labels_train_rank_and_notify_with_signed_webhooks(env):
    p, c, rx = env["p"], env["c"], env["rx"]
    hook = c.add_webhook(rx.url, SECRET, retry_base_s=0.05)
    c.set_settings("classifier", epochs=2)  # seconds of training, not minutes
    # below the threshold (20): counted, no training
    state = c.labels_added(_import(env, range(1, 13)))
    assert state == {"classifier": {"new_labels": 12, "retrain_every": 20, "training": False}}
    # labels recorded while no coordinator listened (the CLI without a cluster) count too
    write_inbox(p, {"classifier": 12})
    _import(env, range(13, 25))
    state = c.labels_added({})
    assert c.wait_idle(180)
    assert [n["type"] for n in c.notifications_after(0)] == ["model_trained", "ranks_changed"]
    assert [m["version"] for m in list_versions(p, "classifier")] == [1]
    assert ranks.list_versions(p, "classifier") == [1]
    assert c.status()["families"]["classifier"]["new_labels"] == 0

    assert c.labels_added(_import(env, range(25, 50)))["classifier"]["training"] is True
    assert c.wait_idle(180)
    notes = c.notifications_after(2)
    assert [n["type"] for n in notes] == ["model_trained", "ranks_changed"]
    assert ranks.list_versions(p, "classifier") == [1, 2]
    summary = notes[1]["payload"]
    assert (summary["previous_version"], summary["version"]) == (1, 2)
    assert (summary["previous_model_version"], summary["model_version"]) == (1, 2)
    # the summary is the change between the two stored rankings, over images unlabeled now
    expected = ranking.rank_change(_unlabeled_ids(p, 1), _unlabeled_ids(p, 2), top_n=100)
    for k in ("overlap", "entered", "left", "spearman", "common", "changed"):
        assert summary[k] == expected[k], k
    assert summary["entered_count"] == len(expected["entered"])
    assert summary["images"] == 80 - 49

    # every notification reached the webhook, signed, once per id
    ids = {str(n["id"]) for n in c.notifications_after(0)}
    assert set(rx.accepted) == ids
    for headers, body in rx.requests:
        assert verify_signature(SECRET, body, headers[SIGNATURE_HEADER])
    assert all(e["ok"] for e in c.webhook_deliveries(hook["id"]))


@pytest.mark.ray
def test_invalid_settings_are_refused_and_nothing_changes(env):
    c = env["c"]
    before = c.get_settings("classifier")
    with pytest.raises(FamilySettingsError, match="choose one of: margin, least_confidence"):
        c.set_settings("classifier", heuristic="smartest")
    with pytest.raises(FamilySettingsError, match="unknown family"):
        c.set_settings("classifiers", heuristic="entropy")
    assert c.get_settings("classifier") == before


@pytest.mark.ray
def test_policy_only_when_asked_never_trains_on_labels(env):
    c = env["c"]
    c.set_settings("tagger", retrain_every=0)
    state = c.labels_added({"tagger": 500})
    assert state["tagger"] == {"new_labels": 500, "retrain_every": None, "training": False}
    assert c.status()["families"]["tagger"]["training"] is None


@pytest.mark.ray
def test_changing_the_heuristic_reranks_without_retraining(env):
    p, c = env["p"], env["c"]
    models = len(list_versions(p, "classifier"))
    last = c.notifications_after(0)[-1]["id"]
    res = c.set_settings("classifier", heuristic="entropy")
    assert res["reranking"] is True
    assert c.wait_idle(120)
    assert len(list_versions(p, "classifier")) == models
    v = ranks.list_versions(p, "classifier")[-1]
    meta = ranks.read_meta(p, "classifier", v)
    assert (meta["heuristic"], meta["model_version"]) == ("entropy", models)
    scores = ranks.read_version(p, "classifier", v)["score"].to_pylist()
    assert scores == sorted(scores, reverse=True)
    new = c.notifications_after(last)
    assert [n["type"] for n in new] == ["ranks_changed"]
    assert new[0]["payload"]["heuristic"] == "entropy"
    assert new[0]["payload"]["previous_heuristic"] == "margin"


@pytest.mark.ray
def test_heuristic_none_ranks_alphabetically(env):
    p, c = env["p"], env["c"]
    c.set_settings("classifier", heuristic="none")
    assert c.wait_idle(60)
    table, meta = ranks.current(p, "classifier")
    assert meta["heuristic"] == "none"
    names = table["file_name"].to_pylist()
    assert names == sorted(names) and len(names) == 80 - 49
    # a new model does not re-rank a family whose heuristic is none
    before = ranks.list_versions(p, "classifier")
    _add_model(p, seed=1)
    c.model_registered("classifier")
    assert c.wait_idle(60)
    assert ranks.list_versions(p, "classifier") == before


def _add_model(p: Project, seed: int) -> int:
    torch.manual_seed(seed)
    net = build_model("classifier", num_classes=4)
    meta = {"classes": ["circle", "square", "triangle", "cross"], "input_size": [SIZE, SIZE]}
    return save_version(p, "classifier", script_bytes(net.eval()), meta)["version"]


@pytest.mark.ray
def test_only_the_newest_model_version_is_ranked_to_completion(env):
    p, c = env["p"], env["c"]
    before = ranks.list_versions(p, "classifier")
    c.set_settings("classifier", heuristic="margin")  # starts a rank job (current model)
    a, b = _add_model(p, seed=2), _add_model(p, seed=3)
    c.model_registered("classifier", a)  # replaces that job
    c.model_registered("classifier", b)  # and this one replaces that
    assert c.wait_idle(120)
    added = [v for v in ranks.list_versions(p, "classifier") if v not in before]
    assert [ranks.read_meta(p, "classifier", v)["model_version"] for v in added] == [b]
    types = [n["type"] for n in c.notifications_after(0)][-3:]
    assert types == ["model_trained", "model_trained", "ranks_changed"]


RESTART_SCRIPT = textwrap.dedent(
    """
    import json, sys, time
    import ray
    from alray.coordinator import Client

    store, project, phase = sys.argv[1], sys.argv[2], sys.argv[3]
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
             configure_logging=False)
    c = Client(project, store, timeout=120)
    if phase == "first":
        c.set_settings("classifier", heuristic="entropy", retrain_every=7, auto=False)
        run = c.create_run("quick", "classifier", "none", 5)
        assert c.wait_idle(60, webhooks=False)
        c.add_webhook("http://127.0.0.1:9/nobody", "restart-secret", retry_base_s=0.05)
        c.create_run("cut short", "classifier", "margin", 3)  # running when Ray stops
        time.sleep(1.0)
        c.mark_read(1)
    else:
        assert c.wait_idle(120, webhooks=False)
    out = {
        "settings": c.get_settings(),
        "runs": [{k: r[k] for k in ("id", "name", "status")} for r in c.list_runs()],
        "notifications": [(n["id"], n["type"], n["payload"].get("run_id"))
                          for n in c.notifications_after(0)],
        "unread": c.unread_count(),
        "webhooks": [(h["id"], h["delivered_through"]) for h in c.list_webhooks()],
        "pid": c.ping()["pid"],
    }
    print("RESULT " + json.dumps(out))
    ray.shutdown()
    """
)


@pytest.mark.ray
def test_state_survives_a_whole_ray_restart(tmp_path):
    generate(str(tmp_path / "images"), 24, size=SIZE, seed=9)
    p = Project.create("restart", store=str(tmp_path / "store"))
    p.add_images(str(tmp_path / "images"))
    _add_model(p, seed=0)
    script = tmp_path / "phase.py"
    script.write_text(RESTART_SCRIPT)

    def phase(name: str) -> dict:
        env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
        proc = subprocess.run(
            [sys.executable, str(script), p.store_uri, "restart", name],
            capture_output=True,
            text=True,
            timeout=240,
            env=env,
        )
        lines = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
        assert proc.returncode == 0 and lines, proc.stderr[-3000:]
        return json.loads(lines[-1][len("RESULT ") :])

    t0 = time.monotonic()
    first = phase("first")
    t1 = time.monotonic()
    second = phase("second")
    print(f"phases: {t1 - t0:.1f}s, {time.monotonic() - t1:.1f}s")
    assert second["settings"] == first["settings"]
    assert second["settings"]["classifier"]["heuristic"] == "entropy"
    assert second["settings"]["classifier"]["retrain_every"] == 7
    assert [r["id"] for r in second["runs"]] == [r["id"] for r in first["runs"]]
    assert [r["status"] for r in second["runs"]] == ["completed", "completed"]
    assert second["notifications"][: len(first["notifications"])] == first["notifications"]
    kinds = [(t, r) for _, t, r in second["notifications"] if t.startswith("run_")]
    assert kinds == [("run_completed", "r000001"), ("run_completed", "r000002")]
    assert [i for i, _, _ in second["notifications"]] == list(
        range(1, len(second["notifications"]) + 1)
    )
    # nothing was delivered to a dead URL and nothing was dropped: still pending
    assert second["webhooks"] == first["webhooks"]
    assert second["webhooks"][0][1] < len(second["notifications"])
    assert second["unread"] == len(second["notifications"]) - 1


@pytest.mark.ray
def test_cli_commands_reach_the_coordinator(tmp_path, ray_session, capsys):
    from alray.cli import main

    generate(str(tmp_path / "images"), 12, size=SIZE, seed=4)
    name = f"cli-{uuid.uuid4().hex[:6]}"
    Project.create(name, store=str(tmp_path / "store")).add_images(str(tmp_path / "images"))
    base = ["--store", str(tmp_path / "store")]

    def cli(*args: str) -> tuple[int, str, str]:
        code = main([*base, *args])
        out, err = capsys.readouterr()
        return code, out, err

    try:
        code, out, _ = cli("settings", name, "--family", "tagger", "--auto", "off", "--json")
        assert code == 0 and json.loads(out)["settings"]["auto"] is False
        code, _, err = cli("settings", name, "--family", "tagger", "--heuristic", "nope")
        assert code == 1 and "choose one of: margin" in err
        code, out, _ = cli("settings", name, "--json")
        assert json.loads(out)["tagger"]["auto"] is False
        code, out, _ = cli(
            "run", "create", name, "--name", "abc", "--family", "tagger",
            "--heuristic", "none", "--n", "3", "--datasets", "A", "--wait", "--json",
        )  # fmt: skip
        run = json.loads(out)
        assert code == 0 and run["status"] == "completed"
        assert [r["file_name"] for r in run["result"]] == sorted(
            r["file_name"] for r in run["result"]
        )
        code, out, _ = cli("runs", name, "--json")
        assert [r["id"] for r in json.loads(out)] == [run["id"]]
        code, out, _ = cli("notifications", name, "--json", "--mark-read")
        notes = [json.loads(line) for line in out.splitlines()]
        assert [n["type"] for n in notes] == ["run_completed"]
        code, out, _ = cli("webhooks", "add", name, "--url", "https://example.com/h",
                           "--secret", SECRET, "--json")  # fmt: skip
        hook = json.loads(out)
        assert hook["secret"] == "***"
        code, _, err = cli("webhooks", "add", name, "--url", "ftp://x/y", "--secret", SECRET)
        assert code == 1 and "http:// or https://" in err
        code, out, _ = cli("webhooks", "list", name, "--json")
        assert [h["id"] for h in json.loads(out)] == [hook["id"]]
        assert cli("webhooks", "remove", name, hook["id"])[0] == 0
        code, out, _ = cli("coordinator", "status", name, "--json")
        assert json.loads(out)["unread"] == 0
    finally:
        kill_coordinator(name)
