"""Classifier training throughput: ``alray.training.train`` vs a plain PyTorch loop.

Both train the same net (``alray.models.build_model("classifier", C)``) with the same optimizer
(AdamW, one-cycle schedule), batch size, epochs and training images, in the same process, on
generated shapes (:mod:`alray.synthetic`) in a temp dir. Both are timed end to end with their
data loading: alray reads the project (manifest, labels), decodes the images, splits, trains,
validates and stores a TorchScript version; the plain loop decodes the same training files
with PIL and trains. Images/s = epochs × training images / seconds. Runs alternate and the
best of ``--repeats`` is kept for each side, so a busy neighbour on the machine hurts both
alike. Target: ratio ≥ 0.8.

    python bench/training.py [--images 2000] [--epochs N] [--repeats 2] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import warnings

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from alray.models import build_model  # noqa: E402
from alray.project import Project  # noqa: E402
from alray.synthetic import generate  # noqa: E402
from alray.training import (  # noqa: E402
    BATCH_SIZES,
    LEARNING_RATE,
    default_epochs,
    load_labeled,
    split_indices,
    train,
)

BATCH_SIZE = BATCH_SIZES["classifier"]  # both sides train the classifier at its default batch

warnings.filterwarnings("ignore", message=".*torch.jit.*")


def plain_loop(files: list[str], labels: np.ndarray, num_classes: int, epochs: int,
               batch_size: int, seed: int) -> tuple[float, float]:
    """Decode with PIL, train with a textbook loop; return (wall, CPU) seconds."""
    t0, c0 = time.perf_counter(), time.process_time()
    x_all = np.stack([np.asarray(Image.open(f).convert("RGB").resize((64, 64))) for f in files])
    y_all = torch.from_numpy(labels)
    torch.manual_seed(seed)
    model = build_model("classifier", num_classes).train()
    opt = torch.optim.AdamW(model.parameters(), lr=LEARNING_RATE, weight_decay=1e-4)
    steps = epochs * -(-len(files) // batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=LEARNING_RATE, total_steps=steps,
                                                pct_start=0.15)
    rng = np.random.default_rng(seed)
    for _ in range(epochs):
        perm = rng.permutation(len(files))
        for s in range(0, len(perm), batch_size):
            idx = perm[s:s + batch_size]
            x = torch.from_numpy(x_all[idx]).permute(0, 3, 1, 2).float() / 255
            loss = F.cross_entropy(model.dense(x)["logits"], y_all[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    return time.perf_counter() - t0, time.process_time() - c0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=2000)
    ap.add_argument("--epochs", type=int, default=None,
                    help="default: what alray.training picks for the training-set size")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads (1: on a shared machine 2 OpenMP threads spin-wait)")
    ap.add_argument("--json", action="store_true", help="print the figures as JSON too")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as d:
        coco = generate(os.path.join(d, "imgs"), args.images, seed=0)
        p = Project.create("bench", store=os.path.join(d, "store"))
        p.add_images(os.path.join(d, "imgs"))
        p.import_labels(coco=coco)
        # the plain loop trains on exactly alray's training split
        data = load_labeled(p, "classifier", 64)
        tr, _ = split_indices(len(data.image_ids), 0.2, 0, data.y)
        uri = dict(zip(p.images()["image_id"].to_pylist(), p.images()["uri"].to_pylist(),
                       strict=True))
        files = [uri[data.image_ids[i]] for i in tr]
        labels = data.y[tr].astype(np.int64)
        n_train = len(tr)
        del data
        epochs = args.epochs or default_epochs("classifier", n_train)

        alray_s, plain_s, alray_cpu, plain_cpu = [], [], [], []
        for _ in range(args.repeats):
            wall, cpu = plain_loop(files, labels, 4, epochs, BATCH_SIZE, 0)
            plain_s.append(wall)
            plain_cpu.append(cpu)
            t0, c0 = time.perf_counter(), time.process_time()
            meta = train(p, "classifier", epochs=epochs, seed=0, device="cpu",
                         batch_size=BATCH_SIZE)
            alray_s.append(time.perf_counter() - t0)
            alray_cpu.append(time.process_time() - c0)
        seen = epochs * n_train
        a_ips, p_ips = seen / min(alray_s), seen / min(plain_s)
        a_cpu, p_cpu = seen / min(alray_cpu), seen / min(plain_cpu)
        print(f"classifier training, {n_train} training images x {epochs} epochs, "
              f"batch {BATCH_SIZE}, {args.threads} thread(s), best of {args.repeats}")
        print(f"  alray.training.train : {a_ips:8.1f} images/s wall  {a_cpu:8.1f} per CPU-s  "
              f"(accuracy {meta['metric']['value']:.3f})")
        print(f"  plain PyTorch loop   : {p_ips:8.1f} images/s wall  {p_cpu:8.1f} per CPU-s")
        print(f"  ratio alray / plain  : {a_ips / p_ips:.2f} wall, {a_cpu / p_cpu:.2f} CPU  "
              "(target >= 0.8; on a shared machine the CPU ratio is the steadier one)")
        if args.json:
            print(json.dumps({"alray_images_per_s": a_ips, "plain_images_per_s": p_ips,
                              "ratio": a_ips / p_ips, "cpu_ratio": a_cpu / p_cpu,
                              "alray_s": alray_s, "plain_s": plain_s, "alray_cpu_s": alray_cpu,
                              "plain_cpu_s": plain_cpu}))


if __name__ == "__main__":
    main()
