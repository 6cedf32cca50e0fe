"""The Active Learning dashboard end to end: Debian's chromium (headless, driven by Playwright)
against the live Serve app on loopback, with a real project, a trained classifier and two rank
versions.

One Serve app and one browser page for the module (each takes seconds to start here); the
tests run in file order on the same page, and each says what state it expects. The app has a
token, so the first test signs in through the page's prompt. Screenshots of the main views
go to ``artifacts/dashboard/`` and are checked not to be blank. Waits are generous (a shared
2-core machine) and nothing is timed.
"""

from __future__ import annotations

import json
import re
import shutil
import time
import uuid
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest
from _net import free_port

from alray import family_settings as fset
from alray import scoring
from alray.coordinator import kill_coordinator
from alray.project import Project
from alray.synthetic import generate

CHROMIUM = shutil.which("chromium")
pytestmark = [
    pytest.mark.ray,
    pytest.mark.skipif(
        CHROMIUM is None,
        reason="no chromium on PATH: the browser tests drive Debian's chromium "
        "(.ci/setup installs it with apt-get)",
    ),
]
sync_api = pytest.importorskip(
    "playwright.sync_api", reason="the Python package playwright is not installed"
)
expect = sync_api.expect

TOKEN = "dashboard-test-token-5c1e"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
N_IMAGES = 48  # 16 per dataset A, B, C
N_LABELED = 24  # images with labels: the others are ranked
PAGE = 24  # the page's rank page size
WAIT_MS = 240_000  # Ray work (scoring a run) on a slow, shared machine
UI_MS = 60_000  # anything the page does on its own
ARTIFACTS = Path(__file__).resolve().parent.parent / "artifacts" / "dashboard"
PAGE_ERRORS: list[str] = []  # uncaught exceptions in the page's JavaScript
BROWSER_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def _make_project(root: Path, name: str) -> Project:
    """Images in three datasets, classifier labels on half of them, a classifier trained on
    those, and two rank versions (random, then margin with the model), so the page has a
    ranking, a score histogram and a movement to show. Nothing retrains on its own."""
    import torch

    from alray.training import train

    coco = generate(str(root / "images"), N_IMAGES, size=32, seed=7)
    p = Project.create(name, store=str(root / "store"))
    p.add_images(str(root / "images"))
    doc = json.loads(Path(coco).read_text())
    keep = {im["id"] for im in doc["images"][:N_LABELED]}
    subset = {
        "images": [im for im in doc["images"] if im["id"] in keep],
        "annotations": [a for a in doc["annotations"] if a["image_id"] in keep],
        "categories": doc["categories"],
    }
    (root / "labels.json").write_text(json.dumps(subset))
    p.import_labels(coco=str(root / "labels.json"), skip_invalid=True)
    every = fset.load(p.store)
    for fam in every:
        every[fam] = every[fam].with_changes(retrain_every=0)
    fset.save(p.store, every)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # two OpenMP threads on a shared 2-core machine spin-wait
    try:
        train(p, "classifier", epochs=4, input_size=32, device="cpu")
    finally:
        torch.set_num_threads(threads)
    scoring.rank(p, "classifier", heuristic="random", save=True)
    scoring.rank(p, "classifier", heuristic="margin", save=True)
    return p


@pytest.fixture(scope="module")
def live(tmp_path_factory, ray_session):
    from ray import serve

    from alray.api import build_app

    root = tmp_path_factory.mktemp("dashboard")
    name = f"shapes-{uuid.uuid4().hex[:6]}"
    p = _make_project(root, name)
    ns = f"dashtest-{uuid.uuid4().hex[:8]}"
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    serve.run(
        build_app(p.store_uri, api_token=TOKEN, namespace=ns),
        name="alray-dashboard-test",
        route_prefix="/",
        blocking=False,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:  # serve.run returns when the app is deployed; the proxy may lag a little
        try:
            if httpx.get(f"{url}/healthz", timeout=10).status_code == 200:
                break
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError("the API did not come up")
        time.sleep(0.5)
    unlabeled = p.unlabeled("classifier")["file_name"].to_pylist()
    yield SimpleNamespace(url=url, name=name, p=p, unlabeled=unlabeled)
    serve.shutdown()
    kill_coordinator(name, ns)


@pytest.fixture(scope="module")
def page(live):
    pw = sync_api.sync_playwright().start()
    browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=BROWSER_ARGS)
    context = browser.new_context(viewport={"width": 1280, "height": 800}, accept_downloads=True)
    pg = context.new_page()
    pg.set_default_timeout(UI_MS)
    expect.set_options(timeout=UI_MS)  # expect() has its own default (5 s)
    pg.on("pageerror", lambda e: PAGE_ERRORS.append(str(e)))
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    yield pg
    context.close()
    browser.close()
    pw.stop()


def _shot(page, name: str, *, full_page: bool = False) -> Path:
    """Save a screenshot as a test artifact and check that it shows something."""
    from PIL import Image, ImageStat

    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=full_page)
    with Image.open(path) as img:
        rgb = img.convert("RGB")
        colours = rgb.getcolors(maxcolors=4096)  # None: more than 4096 colours
        spread = sum(ImageStat.Stat(rgb).stddev) / 3
    assert colours is None or len(colours) > 64, f"{path} looks blank ({len(colours)} colours)"
    assert spread > 10, f"{path} looks blank (pixel spread {spread:.1f})"
    return path


def _cards(page, scope: str) -> list[dict]:
    return page.eval_on_selector_all(
        f"{scope} .card",
        "els => els.map(e => ({file: e.dataset.file, rank: Number(e.dataset.rank), "
        "score: e.querySelector('.score')?.textContent ?? null}))",
    )


def _thumbnails_loaded(page, scope: str) -> None:
    page.wait_for_function(
        "scope => { const imgs = [...document.querySelectorAll(scope + ' .thumb img')];"
        " return imgs.length > 0 && imgs.every(i => i.complete && i.naturalWidth > 0); }",
        arg=scope,
    )


def _unread(page) -> int:
    return int(page.locator("#bell").get_attribute("data-unread") or 0)


def _no_page_errors() -> None:
    assert not PAGE_ERRORS, PAGE_ERRORS


# ---------------------------------------------------------------------------------------- tests
def test_open_page_and_static_files_need_no_token(live):
    r = httpx.get(f"{live.url}/", timeout=30)
    assert r.status_code == 200 and "text/html" in r.headers["content-type"]
    assert '<script type="module" src="/static/app.js">' in r.text
    assert httpx.get(f"{live.url}/static/app.js", timeout=30).status_code == 200
    assert httpx.get(f"{live.url}/static/nope.js", timeout=30).status_code == 404
    r = httpx.get(f"{live.url}/api/projects/{live.name}/ranks/history?family=classifier")
    assert r.status_code == 401


def test_rank_history_route(live):
    r = httpx.get(
        f"{live.url}/api/projects/{live.name}/ranks/history",
        params={"family": "classifier", "top": 5},
        headers=AUTH,
        timeout=60,
    )
    assert r.status_code == 200, r.text
    h = r.json()
    assert (h["version"], h["heuristic"], h["model_version"]) == (2, "margin", 1)
    assert sum(h["histogram"]["counts"]) == len(live.unlabeled)
    assert len(h["histogram"]["edges"]) == len(h["histogram"]["counts"]) + 1
    assert [v["version"] for v in h["versions"]] == [2, 1]
    change = h["change"]
    assert (change["previous_version"], change["version"]) == (1, 2)
    assert change["previous_heuristic"] == "random" and change["common"] == len(live.unlabeled)
    assert [m["rank"] for m in h["moves"]] == sorted(m["rank"] for m in h["moves"])
    assert len(h["moves"]) == 5 and all(m["previous_rank"] for m in h["moves"])
    r = httpx.get(
        f"{live.url}/api/projects/{live.name}/ranks/history",
        params={"family": "tagger"},
        headers=AUTH,
        timeout=60,
    )
    assert r.status_code == 404 and "no ranks" in r.json()["detail"]


def test_sign_in_then_the_ranked_grid(live, page):
    page.goto(f"{live.url}/")
    expect(page.locator("#token-dialog")).to_be_visible()
    page.fill("#token-input", "not-the-token")
    page.click("#token-form button")
    expect(page.locator("#token-error")).to_contain_text("wrong token")
    _shot(page, "01-token-prompt")
    page.fill("#token-input", TOKEN)
    page.click("#token-form button")
    expect(page.locator("#token-dialog")).to_be_hidden()

    fam = "#family-classifier"
    expect(page.locator(f"{fam} .heuristic")).to_have_text("margin")
    expect(page.locator(f"{fam} .model-version")).to_have_text("model v1")
    expect(page.locator(f"{fam} .rank-version")).to_have_text("ranks v2")
    expect(page.locator(f"{fam} .card")).to_have_count(min(PAGE, len(live.unlabeled)))
    cards = _cards(page, fam)
    ranks = [c["rank"] for c in cards]
    scores = [float(c["score"]) for c in cards]
    assert ranks == sorted(ranks) and scores == sorted(scores, reverse=True)
    assert {c["file"] for c in cards} <= set(live.unlabeled)
    expect(page.locator(f"{fam} svg.histogram rect.bar")).to_have_count(20)
    expect(page.locator(f"{fam} svg.movement g.move")).to_have_count(20)
    expect(page.locator(f"{fam} .change-summary")).to_contain_text("entered")
    _thumbnails_loaded(page, fam)
    expect(page.locator("#summary")).to_contain_text(live.name)
    _shot(page, "02-active-learning-1280")

    # the dataset filter: only B's images, still in rank order
    page.select_option(f"{fam} .dataset-filter", "B")
    expect(page.locator(f"{fam} .page-info")).to_contain_text(re.compile(r"of \d+$"))
    page.wait_for_function(
        "() => [...document.querySelectorAll('#family-classifier .card')]"
        ".every(c => c.dataset.file.startsWith('B_'))"
    )
    b_ranks = [c["rank"] for c in _cards(page, fam)]
    assert b_ranks and b_ranks == sorted(b_ranks)
    page.select_option(f"{fam} .dataset-filter", "")
    expect(page.locator(f"{fam} .card")).to_have_count(min(PAGE, len(live.unlabeled)))

    page.set_viewport_size({"width": 420, "height": 900})
    _thumbnails_loaded(page, fam)
    _shot(page, "03-active-learning-420", full_page=True)
    page.set_viewport_size({"width": 1280, "height": 800})
    _no_page_errors()


def test_new_rank_form_run_completes_and_the_bell_counts_it(live, page):
    page.click("#tab-runs")
    expect(page.locator("#new-run")).to_be_visible()
    before = _unread(page)

    page.click("#new-run")
    expect(page.locator("#run-dialog")).to_be_visible()
    # the API's validation messages, next to their fields
    page.fill("#run-name", "   ")
    page.fill("#run-n", "0")
    page.click("#run-submit")
    expect(page.locator("#err-n")).to_contain_text("greater than or equal to 1")
    expect(page.locator("#err-name")).not_to_be_empty()
    _shot(page, "04-new-rank-validation")
    page.fill("#run-name", "Browser run")
    page.fill("#run-n", "5")
    page.select_option("#run-family", "classifier")
    page.select_option("#run-heuristic", "least_confidence")
    page.check("#run-dialog input[name=datasets][value=A]")
    page.click("#run-submit")
    expect(page.locator("#run-dialog")).to_be_hidden()

    row = page.locator("tr.run-row", has_text="Browser run")
    expect(row).to_have_count(1)
    expect(row).to_have_attribute("data-status", "completed", timeout=WAIT_MS)
    expect(row.locator(".progress")).to_have_attribute("aria-valuenow", "100")
    # run_completed came through the event stream: the bell counts it without a reload
    page.wait_for_function(
        f"() => Number(document.querySelector('#bell').dataset.unread) > {before}",
        timeout=UI_MS,
    )
    _shot(page, "05-runs")

    page.click("#bell")
    item = page.locator(".notification[data-type=run_completed]").first
    expect(item).to_contain_text("Browser run")
    _shot(page, "06-notifications")
    item.click()  # opens the run it is about
    expect(page.locator("#download-csv")).to_be_visible()
    expect(page.locator(".run-result .card")).to_have_count(5)
    cards = _cards(page, ".run-result")
    assert [c["rank"] for c in cards] == [1, 2, 3, 4, 5]
    assert all(c["file"].startswith("A_") for c in cards)
    _thumbnails_loaded(page, ".run-result")
    _shot(page, "07-run-result")

    with page.expect_download() as download:
        page.click("#download-csv")
    lines = Path(download.value.path()).read_text().splitlines()
    assert lines[0] == "rank,image_id,file_name,dataset,score"
    assert [line.split(",")[2] for line in lines[1:]] == [c["file"] for c in cards]
    _no_page_errors()


def test_heuristic_none_lists_images_alphabetically(live, page):
    page.click("#tab-al")
    fam = "#family-classifier"
    expect(page.locator(f"{fam} .card").first).to_be_visible()
    page.select_option("#settings-family", "classifier")
    page.select_option("#settings-heuristic", "none")
    page.click("#settings-save")
    expect(page.locator("#settings-status")).to_contain_text("Saved")
    expect(page.locator(f"{fam} .source")).to_contain_text("Alphabetical")
    expect(page.locator(f"{fam} .alphabetical-note")).to_be_visible()
    expect(page.locator(f"{fam} .card .score")).to_have_count(0)
    names = [c["file"] for c in _cards(page, fam)]
    assert names == sorted(live.unlabeled)[:PAGE]
    _thumbnails_loaded(page, fam)
    _shot(page, "08-heuristic-none")
    # the panel kept the choice, and the API has it
    expect(page.locator("#settings-heuristic")).to_have_value("none")
    r = httpx.get(
        f"{live.url}/api/projects/{live.name}/settings/classifier", headers=AUTH, timeout=60
    )
    assert r.json()["heuristic"] == "none"
    _no_page_errors()
