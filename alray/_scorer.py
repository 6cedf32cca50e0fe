"""The Ray Data stages of a scoring job: read + decode (tasks), model replicas (actors), top N.

Kept private: ``alray.scoring`` is the public surface and wires these together.
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from alray import families
from alray.preprocess import ImageDecodeError, as_size, prepare_image
from alray.project import read_uri
from alray.ranking import TopK

OUT_COLUMNS = ("image_id", "file_name", "dataset", "uri", "score", "error")


def random_scores(image_ids: Any, seed: int) -> np.ndarray:
    """Seeded uniform [0, 1) per image, from a hash of (seed, image id): the same image gets the
    same score however the images are batched, ordered or spread over workers."""
    out = np.empty(len(image_ids), dtype=np.float64)
    for i, iid in enumerate(image_ids):
        h = hashlib.blake2b(f"{seed}:{iid}".encode(), digest_size=8).digest()
        out[i] = int.from_bytes(h, "little") / 2.0**64
    return out


def keep_unlabeled(batch: pa.Table, labeled: pa.Array, datasets: list[str] | None) -> pa.Table:
    """Drop labeled images (and other datasets) from a manifest batch."""
    mask = pc.invert(pc.is_in(batch["image_id"], labeled))
    if datasets:
        mask = pc.and_(mask, pc.is_in(batch["dataset"], pa.array(datasets)))
    return batch.filter(mask)


def decode_batch(batch: pa.Table, input_size: tuple[int, int]) -> dict[str, np.ndarray]:
    """Read and decode images to ``uint8 (N, H, W, 3)``; failures keep their row with an error."""
    h, w = as_size(input_size)
    n = batch.num_rows
    pixels = np.zeros((n, h, w, 3), dtype=np.uint8)
    orig = np.zeros((n, 2), dtype=np.int64)
    errors = np.full(n, "", dtype=object)
    for i, uri in enumerate(batch["uri"].to_pylist()):
        try:
            pixels[i], orig[i] = prepare_image(read_uri(uri), (h, w))
        except ImageDecodeError as e:
            errors[i] = f"corrupt image: {e}"
        except OSError as e:  # vanished or unreadable file: skipped and reported, never fatal
            errors[i] = f"unreadable: {e.strerror or e}"
    return {
        "image_id": batch["image_id"].to_numpy(zero_copy_only=False),
        "file_name": batch["file_name"].to_numpy(zero_copy_only=False),
        "dataset": batch["dataset"].to_numpy(zero_copy_only=False),
        "uri": batch["uri"].to_numpy(zero_copy_only=False),
        "pixels": pixels,
        "orig_hw": orig,
        "error": errors,
    }


class Scorer:
    """One model replica: the family's assistant in memory, scoring decoded batches."""

    def __init__(
        self,
        project_name: str,
        store_uri: str,
        family: str,
        model_version: int,
        heuristic: str,
        reduction: str,
        mc_samples: int,
        seed: int,
        device: str,
        threads: int | None = None,
    ):
        import torch

        from alray.assistants import load_assistant
        from alray.project import Project

        if threads:
            torch.set_num_threads(threads)
        self.family = family
        self.heuristic = heuristic
        self.reduction = reduction
        self.mc_samples = mc_samples
        self.seed = seed
        project = Project(project_name, store_uri)
        self.assistant = load_assistant(project, family, model_version, device=device)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        errors = batch["error"]
        ok = np.flatnonzero(errors == "")
        scores = np.full(len(errors), np.nan, dtype=np.float64)
        if len(ok):
            pixels = batch["pixels"][ok]
            sizes = batch["orig_hw"][ok]
            if self.heuristic == "bald":
                records = self.assistant.predict_mc(pixels, self.mc_samples, sizes)
            else:
                records = self.assistant.predict(pixels, sizes)
            scores[ok] = families.image_scores(
                self.family, records, self.heuristic, self.reduction, seed=self.seed
            )
        return {c: batch[c] for c in OUT_COLUMNS if c != "score"} | {"score": scores}


def top_n_per_block(batch: dict[str, np.ndarray], n: int) -> dict[str, np.ndarray]:
    """Keep only a block's best ``n`` scored rows (and its errors): memory O(n) per block."""
    good = batch["error"] == ""
    top = TopK(n)
    top.add(
        batch["score"][good],
        batch["image_id"][good],
        **{c: batch[c][good] for c in ("file_name", "dataset", "uri", "error")},
    )
    res = top.result()
    bad = ~good
    return {
        c: np.concatenate([np.asarray(res[c], dtype=batch[c].dtype), batch[c][bad]])
        for c in OUT_COLUMNS
    }
