"""AI assistants: model versions in the store, loading them, and predicting records with them.

A model version lives under the project's store::

    models/<family>/v0001/model.pt    TorchScript (trained by alray, or brought by the user)
    models/<family>/v0001/meta.json   written last: a version without it does not exist

``meta.json`` holds ``version``, ``family``, ``classes`` (the names along the label axis of
``probs``: classes, tags for the tagger, attributes for the attributor; the tagger also gets
``tags`` and the attributor ``attributes`` and ``object_classes``), ``input_size`` ``[H, W]``,
``mean``/``std`` (or null), ``metric`` ``{"name", "value"}``, ``label_count`` (labeled images
used), ``created``, ``source`` (``"trained"`` or ``"torchscript"``) and, for trained versions,
``training`` details.

The model convention (inputs, outputs, Monte-Carlo dropout) is in :mod:`alray.models`.

>>> import tempfile, torch
>>> from alray.project import Project
>>> from alray.models import build_model, to_script
>>> d = tempfile.mkdtemp()
>>> p = Project.create("demo", store=d)
>>> torch.jit.save(to_script(build_model("classifier", 2)), f"{d}/m.pt")
>>> register_torchscript(p, "classifier", f"{d}/m.pt", ["cat", "dog"], 32)["version"]
1
>>> a = load_assistant(p, "classifier", device="cpu")
>>> rec = a.predict(torch.zeros(1, 32, 32, 3, dtype=torch.uint8).numpy())[0]
>>> rec["probs"].shape
(2,)
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Any

import numpy as np
import torch

from alray import preprocess
from alray.families import FAMILIES, OBJECT_FAMILIES, check_family, get_family, validate_record
from alray.metrics import box_iou
from alray.models import load_script

_VERSION_DIR = re.compile(r"^v(\d{4,})$")


# ---------------------------------------------------------------------------------- devices
def select_device(setting: str = "auto") -> torch.device:
    """``'auto'`` → CUDA when a GPU is visible, else CPU; ``'cpu'``; ``'cuda'`` (refused when
    there is no GPU, rather than failing later inside a model).

    >>> select_device("cpu")
    device(type='cpu')
    """
    s = (setting or "auto").lower()
    if s == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if s == "cpu":
        return torch.device("cpu")
    if s.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError(
                f"device {setting!r} asked for, but no CUDA GPU is visible here; "
                "use 'auto' or 'cpu'"
            )
        return torch.device(s)
    raise ValueError(f"unknown device {setting!r}; expected 'auto', 'cpu' or 'cuda'")


# --------------------------------------------------------------------------------- versions
def _models(project: Any, family: str):
    return project.store.sub("models", family)


def _version_numbers(project: Any, family: str, complete_only: bool = True) -> list[int]:
    s = _models(project, family)
    out = []
    for d in s.list_dirs():
        m = _VERSION_DIR.match(d)
        if m and (not complete_only or s.exists(d, "meta.json")):
            out.append(int(m.group(1)))
    return sorted(out)


def version_dir(version: int) -> str:
    return f"v{version:04d}"


def list_versions(project: Any, family: str | None = None) -> list[dict]:
    """Metas of the complete model versions, by family then version number."""
    fams = [check_family(family)] if family else list(FAMILIES)
    out = []
    for fam in fams:
        s = _models(project, fam)
        for v in _version_numbers(project, fam):
            out.append(s.read_json(version_dir(v), "meta.json"))
    return out


def latest_version(project: Any, family: str) -> dict | None:
    """Meta of the newest complete version of a family, or None when there is none."""
    nums = _version_numbers(project, check_family(family))
    if not nums:
        return None
    return _models(project, family).read_json(version_dir(nums[-1]), "meta.json")


def save_version(project: Any, family: str, model_bytes: bytes, meta: dict) -> dict:
    """Store ``model.pt`` then ``meta.json`` as the next version; return the full meta.

    The meta is written last (atomically), so a crash leaves an incomplete folder that is never
    listed; its number is skipped by the next version.
    """
    check_family(family)
    nums = _version_numbers(project, family, complete_only=False)
    version = (nums[-1] if nums else 0) + 1
    s = _models(project, family)
    d = version_dir(version)
    s.write_bytes(model_bytes, d, "model.pt")
    full = {
        "version": version,
        "family": family,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "model_file": "model.pt",
        **meta,
    }
    full["version"] = version
    classes = list(full.get("classes") or [])
    if family == "tagger":
        full["tags"] = classes
    if family == "attributor":
        full["attributes"] = classes
        full.setdefault("object_classes", [])
    s.write_json(full, d, "meta.json")
    return full


# -------------------------------------------------------------------------------- assistant
def _to_numpy(t: torch.Tensor) -> np.ndarray:
    return t.detach().float().cpu().numpy()


class Assistant:
    """A loaded model version: turns image batches into the family's prediction records.

    ``predict`` takes a uint8 ``(N, H, W, 3)`` batch at the input size (what
    :func:`alray.preprocess.prepare_image` makes) or a float ``(N, 3, H, W)`` tensor already
    normalised. ``sizes`` (original ``(height, width)`` per image) scales boxes back to the
    original images; masks stay at the input size (see :func:`resize_mask`).
    """

    def __init__(self, module: torch.jit.ScriptModule, meta: dict, device: torch.device,
                 batch_size: int = 64):
        self.module = module
        self.meta = meta
        self.device = device
        self.batch_size = batch_size
        self.family: str = meta["family"]
        self.version: int = int(meta["version"])
        self.classes: list[str] = list(meta["classes"])
        self.input_size: tuple[int, int] = preprocess.as_size(meta["input_size"])
        self.mean = meta.get("mean")
        self.std = meta.get("std")
        self._has_mc = hasattr(module, "forward_mc")
        self._dropouts = [
            m for m in module.modules() if "Dropout" in getattr(m, "original_name", "")
        ]

    def __repr__(self) -> str:
        return f"Assistant({self.family} v{self.version}, {len(self.classes)} classes)"

    @property
    def supports_mc(self) -> bool:
        """Whether K Monte-Carlo samples can differ (the model has dropout or forward_mc)."""
        return self._has_mc or bool(self._dropouts)

    def prepare(self, datas: Sequence[bytes]) -> tuple[np.ndarray, np.ndarray, list[int]]:
        """Decode and resize image bytes: ``(uint8 batch, original sizes, failed indices)``."""
        return preprocess.prepare_images(datas, self.input_size)

    def _tensor(self, batch: np.ndarray | torch.Tensor) -> torch.Tensor:
        return preprocess.to_tensor(batch, self.mean, self.std, device=self.device)

    def _chunks(self, batch: np.ndarray | torch.Tensor):
        for i in range(0, len(batch), self.batch_size):
            yield i, batch[i: i + self.batch_size]

    def predict(
        self, batch: np.ndarray | torch.Tensor,
        sizes: Sequence[Sequence[int]] | np.ndarray | None = None,
    ) -> list[dict]:
        """One record per image (deterministic pass)."""
        out: list[dict] = []
        with torch.no_grad():
            for i, chunk in self._chunks(batch):
                raw = self.module(self._tensor(chunk))
                out.extend(self._records(raw, len(chunk), _slice(sizes, i, len(chunk))))
        return out

    def predict_mc(
        self, batch: np.ndarray | torch.Tensor, k: int,
        sizes: Sequence[Sequence[int]] | np.ndarray | None = None,
    ) -> list[dict]:
        """One record per image with K Monte-Carlo-dropout samples in ``probs`` (see
        :mod:`alray.families` for where the K axis goes)."""
        if k < 1:
            raise ValueError(f"k (Monte-Carlo samples) must be >= 1, got {k}")
        out: list[dict] = []
        with torch.no_grad():
            for i, chunk in self._chunks(batch):
                x = self._tensor(chunk)
                raw = self.module.forward_mc(x, k) if self._has_mc else self._mc_fallback(x, k)
                out.extend(self._records(raw, len(chunk), _slice(sizes, i, len(chunk))))
        return out

    def predict_bytes(self, datas: Sequence[bytes], mc_samples: int | None = None
                      ) -> tuple[list[dict], list[int]]:
        """Records of encoded images, boxes in original pixels; and the indices that failed
        to decode (skipped, to be reported)."""
        batch, sizes, bad = self.prepare(datas)
        if mc_samples:
            return self.predict_mc(batch, mc_samples, sizes), bad
        return self.predict(batch, sizes), bad

    # ------------------------------------------------------------------------------ helpers
    def _mc_fallback(self, x: torch.Tensor, k: int):
        """K forward passes with only the Dropout modules in training mode."""
        for m in self._dropouts:
            m.train()
        try:
            samples = [self.module(x) for _ in range(k)]
        finally:
            for m in self._dropouts:
                m.eval()
        if self.family not in OBJECT_FAMILIES:
            return torch.stack(samples, 1)
        det = self.module(x)
        merged = []
        for i, d in enumerate(det):
            probs = [_matched_probs(d, s[i]) for s in samples]
            rec = dict(d)
            rec["probs"] = torch.stack(probs, 1)  # (M, K, C)
            merged.append(rec)
        return merged

    def _records(self, raw: Any, n: int, sizes: np.ndarray | None) -> list[dict]:
        return outputs_to_records(self.family, raw, n, self.input_size, sizes)


def _slice(sizes: Any, start: int, n: int) -> np.ndarray | None:
    if sizes is None:
        return None
    return np.asarray(sizes, dtype=np.float64).reshape(-1, 2)[start: start + n]


def _matched_probs(det: dict, sample: dict) -> torch.Tensor:
    """Probabilities of a dropout sample's detections matched (IoU ≥ 0.5) to the
    deterministic objects; an object the sample lost keeps its deterministic probabilities."""
    p = det["probs"].clone()
    if p.shape[0] == 0 or sample["boxes"].shape[0] == 0:
        return p
    iou = torch.as_tensor(box_iou(_to_numpy(det["boxes"]), _to_numpy(sample["boxes"])))
    best, j = iou.max(1)
    hit = (best >= 0.5).to(p.device)
    p[hit] = sample["probs"][j.to(p.device)[hit]].to(p.dtype)
    return p


def _object_record(family: str, d: Any, input_size: tuple[int, int], size: Any) -> dict:
    if not isinstance(d, dict) or "boxes" not in d or "probs" not in d:
        got = sorted(d) if isinstance(d, dict) else type(d).__name__
        raise ValueError(f"each image's output must be a dict with 'boxes' and 'probs'; got {got}")
    boxes = _to_numpy(d["boxes"]).reshape(-1, 4).astype(np.float64)
    probs = _to_numpy(d["probs"]).astype(np.float64)
    if "scores" in d:
        scores = _to_numpy(d["scores"]).reshape(-1).astype(np.float64)
    else:
        p = probs.mean(1) if probs.ndim == 3 else probs
        scores = p.max(-1) if p.size else np.zeros(len(p))
    if size is not None:  # input pixels → original image pixels
        sy, sx = size[0] / input_size[0], size[1] / input_size[1]
        boxes = boxes * np.array([sx, sy, sx, sy])
    rec = {"boxes": boxes, "probs": probs, "scores": scores}
    if family == "instance_segmentor":
        if "masks" not in d:
            raise ValueError("instance_segmentor output needs 'masks' (M, H, W) per image")
        rec["masks"] = _to_numpy(d["masks"]) > 0.5
    if family == "attributor" and "class_probs" in d:
        rec["class_probs"] = _to_numpy(d["class_probs"]).astype(np.float64)
    return rec


def outputs_to_records(
    family: str, raw: Any, n: int, input_size: tuple[int, int], sizes: np.ndarray | None = None
) -> list[dict]:
    """A model's raw batch output → n records (numpy), checking the structure."""
    spec = get_family(family)
    if family in OBJECT_FAMILIES:
        if not isinstance(raw, (list, tuple)) or len(raw) != n:
            got = f"{type(raw).__name__} of length {len(raw)}" if isinstance(
                raw, (list, tuple)) else type(raw).__name__
            raise ValueError(
                f"{family} model must return a list of {n} dicts (one per image) with "
                f"{spec.description}; got {got}"
            )
        return [
            _object_record(family, d, input_size, None if sizes is None else sizes[i])
            for i, d in enumerate(raw)
        ]
    if not isinstance(raw, torch.Tensor):
        raise ValueError(
            f"{family} model must return a Tensor (B, {', '.join(spec.probs_axes)}); "
            f"got {type(raw).__name__}"
        )
    arr = _to_numpy(raw).astype(np.float64)
    if arr.shape[0] != n:
        raise ValueError(f"{family} model returned {arr.shape[0]} rows for a batch of {n}")
    return [{"probs": arr[i]} for i in range(n)]


def resize_mask(mask: np.ndarray, size: Sequence[int]) -> np.ndarray:
    """Scale a boolean mask ``(h, w)`` to ``(H, W)`` (nearest neighbour)."""
    from PIL import Image

    h, w = int(size[0]), int(size[1])
    if mask.shape == (h, w):
        return mask.astype(bool)
    img = Image.fromarray(mask.astype(np.uint8) * 255).resize((w, h), Image.NEAREST)
    return np.asarray(img) > 127


# ---------------------------------------------------------------------------------- loading
def load_assistant(
    project: Any, family: str, version: int | None = None, *, device: str = "auto",
    batch_size: int = 64,
) -> Assistant:
    """Load a model version (the latest when ``version`` is None) onto a device."""
    check_family(family)
    nums = _version_numbers(project, family)
    if not nums:
        raise ValueError(
            f"no {family} model in project {getattr(project, 'name', '?')!r} yet; train one with "
            f"`alray train PROJECT --family {family}` or add one with `alray models add`"
        )
    v = nums[-1] if version is None else int(version)
    if v not in nums:
        raise ValueError(
            f"no {family} model version {v}; versions: {', '.join(map(str, nums))}"
        )
    s = _models(project, family)
    meta = s.read_json(version_dir(v), "meta.json")
    dev = select_device(device)
    module = load_script(s.read_bytes(version_dir(v), meta.get("model_file", "model.pt")), dev)
    return Assistant(module, meta, dev, batch_size=batch_size)


# ------------------------------------------------------------------------ bring your own model
def _expected(family: str, n_classes: int, size: tuple[int, int]) -> str:
    c = n_classes
    h, w = size
    return {
        "classifier": f"a Tensor (B, {c}) of class probabilities (softmax)",
        "tagger": f"a Tensor (B, {c}) of tag probabilities (sigmoid)",
        "semantic_segmentor": f"a Tensor (B, {c}, h, w) of per-pixel class probabilities",
        "detector": f"a list of B dicts with boxes (M, 4) xyxy and probs (M, {c})",
        "instance_segmentor": (
            f"a list of B dicts with boxes (M, 4), probs (M, {c}) and masks (M, {h}, {w})"
        ),
        "attributor": f"a list of B dicts with boxes (M, 4) and probs (M, {c}) attributes",
    }[family]


def _describe(raw: Any) -> str:
    if isinstance(raw, torch.Tensor):
        return f"Tensor {tuple(raw.shape)}"
    if isinstance(raw, (list, tuple)):
        inner = _describe(raw[0]) if raw else "empty"
        return f"{type(raw).__name__} of {len(raw)} × {inner}"
    if isinstance(raw, dict):
        return "dict {" + ", ".join(f"{k}: {_describe(v)}" for k, v in raw.items()) + "}"
    return type(raw).__name__


def check_model(
    module: torch.jit.ScriptModule, family: str, classes: Sequence[str],
    input_size: tuple[int, int], mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None, batch: int = 2,
) -> None:
    """Run a dummy batch through a model; raise ``ValueError`` saying expected vs got."""
    size = preprocess.as_size(input_size)
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(batch, size[0], size[1], 3, generator=gen)
    x = preprocess.to_tensor((x * 255).to(torch.uint8).numpy(), mean, std)
    expected = _expected(family, len(classes), size)
    try:
        with torch.no_grad():
            raw = module(x)
    except Exception as e:
        msg = str(e).strip().splitlines()
        raise ValueError(
            f"the model failed on a dummy batch (B={batch}, 3, {size[0]}, {size[1]}): "
            f"{msg[-1] if msg else type(e).__name__}"
        ) from None
    try:
        recs = outputs_to_records(family, raw, batch, size)
        for r in recs:
            validate_record(family, r, num_classes=len(classes))
            if family == "instance_segmentor":
                m = np.asarray(r["masks"])
                if m.shape[1:] != size:
                    raise ValueError(f"masks must be (M, {size[0]}, {size[1]}), got {m.shape}")
    except ValueError as e:
        raise ValueError(
            f"{family} model output does not match: expected {expected} for {len(classes)} "
            f"classes ({', '.join(classes[:5])}{', …' if len(classes) > 5 else ''}); "
            f"got {_describe(raw)}. {e}"
        ) from None
    if hasattr(module, "forward_mc"):
        try:
            with torch.no_grad():
                outputs_to_records(family, module.forward_mc(x, 2), batch, size)
        except Exception as e:
            raise ValueError(f"the model's forward_mc(x, k) failed on a dummy batch: {e}") from None


def register_torchscript(
    project: Any,
    family: str,
    path: str,
    classes: Sequence[str],
    input_size: int | Sequence[int],
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    *,
    object_classes: Sequence[str] | None = None,
) -> dict:
    """Check a user's TorchScript model on a dummy batch and store it as the next version.

    ``classes`` names the label axis of ``probs`` (classes, tags, or the attributor's
    attributes; ``object_classes`` names an attributor's optional ``class_probs``).
    """
    check_family(family)
    classes = [str(c) for c in classes]
    if not classes:
        raise ValueError("give the class names (--classes a,b,c)")
    if len(set(classes)) != len(classes):
        raise ValueError(f"class names must be unique, got {classes}")
    size = preprocess.as_size(input_size)
    for name, v in (("mean", mean), ("std", std)):
        if v is not None and len(v) != 3:
            raise ValueError(f"{name} must be 3 numbers (r g b), got {list(v)}")
    if std is not None and any(float(s) == 0 for s in std):
        raise ValueError(f"std must not contain 0, got {list(std)}")
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise ValueError(f"cannot read {path}: {e.strerror or e}") from None
    try:
        module = load_script(data)
    except Exception as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ValueError(
            f"{path} is not a TorchScript model (save one with torch.jit.save("
            f"torch.jit.script(model), path)): {first}"
        ) from None
    check_model(module, family, classes, size, mean, std)
    meta = {
        "classes": classes,
        "input_size": list(size),
        "mean": [float(v) for v in mean] if mean is not None else None,
        "std": [float(v) for v in std] if std is not None else None,
        "metric": None,
        "label_count": None,
        "source": "torchscript",
        "source_file": path,
        "mc": "forward_mc" if hasattr(module, "forward_mc") else "dropout",
    }
    if family == "attributor":
        meta["object_classes"] = list(object_classes or [])
    return save_version(project, family, data, meta)


def script_bytes(module: torch.nn.Module) -> bytes:
    """TorchScript bytes of an eager module (scripted in eval mode)."""
    from alray.models import save_script, to_script

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return save_script(to_script(module))


__all__ = [
    "Assistant",
    "check_model",
    "latest_version",
    "list_versions",
    "load_assistant",
    "outputs_to_records",
    "register_torchscript",
    "resize_mask",
    "save_version",
    "script_bytes",
    "select_device",
]
