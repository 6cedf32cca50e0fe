"""Training targets and losses of the built-in nets (numpy encoding once, torch losses per batch).

Annotations arrive per image in input pixels (``Objects``); :func:`encode_objects` turns a list
of them into dense CenterNet targets on the stride-4 grid, computed once before training.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor


@dataclass
class Objects:
    """The labeled objects of one image, in input pixels."""

    boxes: np.ndarray  # (G, 4) float xyxy
    labels: np.ndarray  # (G,) int class index
    masks: np.ndarray | None = None  # (G, H, W) bool
    attrs: np.ndarray | None = None  # (G, A) float 0/1


@dataclass
class DenseTargets:
    """CenterNet targets of N images on a (h, w) grid; object-level arrays for masks."""

    heat: np.ndarray  # (N, 1, h, w) float32 Gaussian peaks, 1 at object centres
    cls: np.ndarray  # (N, h, w) int64 class of the cell's object, -1 = none
    box: np.ndarray  # (N, 4, h, w) float32: centre offset (cells) and log size (cells)
    reg: np.ndarray  # (N, h, w) float32 weight of box/class/attribute losses
    attrs: np.ndarray | None = None  # (N, A, h, w) float32
    # instance masks: one row per object
    obj_image: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    obj_cell: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    obj_mask: np.ndarray | None = None  # (G, H/2, W/2) float32 soft mask at stride 2
    obj_box: np.ndarray | None = None  # (G, 4) float32 xyxy input pixels


def encode_objects(
    objects: list[Objects], input_size: tuple[int, int], stride: int = 4,
    num_attributes: int = 0, with_masks: bool = False,
) -> DenseTargets:
    """Dense targets for N images: Gaussian objectness, class/box/attributes near centres."""
    hgt, wid = input_size
    h, w = -(-hgt // stride), -(-wid // stride)
    n = len(objects)
    heat = np.zeros((n, 1, h, w), np.float32)
    cls = np.full((n, h, w), -1, np.int64)
    box = np.zeros((n, 4, h, w), np.float32)
    reg = np.zeros((n, h, w), np.float32)
    attrs = np.zeros((n, num_attributes, h, w), np.float32) if num_attributes else None
    gy, gx = np.mgrid[0:h, 0:w].astype(np.float32)
    obj_image, obj_cell, obj_mask, obj_box = [], [], [], []
    for i, objs in enumerate(objects):
        owner = np.zeros((h, w), np.float32)  # heat of the object that owns each cell
        for g in range(len(objs.boxes)):
            x1, y1, x2, y2 = (float(v) for v in objs.boxes[g])
            bw, bh = max(x2 - x1, 1.0), max(y2 - y1, 1.0)
            cx, cy = (x1 + x2) / 2 / stride, (y1 + y2) / 2 / stride
            ci, cj = min(int(cy), h - 1), min(int(cx), w - 1)
            sigma = max(0.5, 0.15 * np.sqrt(bw * bh) / stride)
            g_heat = np.exp(-((gx - cj) ** 2 + (gy - ci) ** 2) / (2 * sigma**2)).astype(np.float32)
            g_heat[ci, cj] = 1.0
            heat[i, 0] = np.maximum(heat[i, 0], g_heat)
            near = (g_heat >= 0.5) & (g_heat > owner)
            owner = np.where(near, g_heat, owner)
            cls[i][near] = int(objs.labels[g])
            reg[i][near] = g_heat[near]
            box[i, 0][near] = cx - (gx[near] + 0.5)
            box[i, 1][near] = cy - (gy[near] + 0.5)
            box[i, 2][near] = np.log(bw / stride)
            box[i, 3][near] = np.log(bh / stride)
            if attrs is not None and objs.attrs is not None:
                attrs[i][:, near] = objs.attrs[g][:, None]
            if with_masks and objs.masks is not None:
                m = objs.masks[g].astype(np.float32)
                ph, pw = -(-hgt // 2), -(-wid // 2)
                m = np.pad(m, ((0, ph * 2 - hgt), (0, pw * 2 - wid)))
                obj_mask.append(m.reshape(ph, 2, pw, 2).mean((1, 3)))
                obj_image.append(i)
                obj_cell.append(ci * w + cj)
                obj_box.append([x1, y1, x2, y2])
    t = DenseTargets(heat, cls, box, reg, attrs)
    if with_masks:
        t.obj_image = np.asarray(obj_image, np.int64)
        t.obj_cell = np.asarray(obj_cell, np.int64)
        t.obj_mask = (np.stack(obj_mask) if obj_mask
                      else np.zeros((0, -(-hgt // 2), -(-wid // 2)), np.float32))
        t.obj_box = np.asarray(obj_box, np.float32).reshape(-1, 4)
    return t


def batch_targets(t: DenseTargets, idx: np.ndarray, device: torch.device) -> dict[str, Tensor]:
    """The targets of the images ``idx`` (a batch) as tensors on a device."""
    out = {
        "heat": torch.from_numpy(t.heat[idx]).to(device),
        "cls": torch.from_numpy(t.cls[idx]).to(device),
        "box": torch.from_numpy(t.box[idx]).to(device),
        "reg": torch.from_numpy(t.reg[idx]).to(device),
    }
    if t.attrs is not None:
        out["attrs"] = torch.from_numpy(t.attrs[idx]).to(device)
    if t.obj_mask is not None:
        pos = np.full(len(t.heat), -1, np.int64)
        pos[idx] = np.arange(len(idx))
        sel = np.flatnonzero(pos[t.obj_image] >= 0)
        out["obj_image"] = torch.from_numpy(pos[t.obj_image[sel]]).to(device)
        out["obj_cell"] = torch.from_numpy(t.obj_cell[sel]).to(device)
        out["obj_mask"] = torch.from_numpy(t.obj_mask[sel]).to(device)
        out["obj_box"] = torch.from_numpy(t.obj_box[sel]).to(device)
    return out


def focal_loss(logits: Tensor, heat: Tensor) -> Tensor:
    """CenterNet's penalty-reduced focal loss, normalised by the number of centres."""
    p = torch.sigmoid(logits).clamp(1e-4, 1 - 1e-4)
    pos = heat.eq(1).float()
    neg = 1 - pos
    pos_loss = -(torch.log(p) * (1 - p) ** 2 * pos).sum()
    neg_loss = -(torch.log(1 - p) * p**2 * (1 - heat) ** 4 * neg).sum()
    return (pos_loss + neg_loss) / pos.sum().clamp(min=1)


def centernet_loss(out: dict[str, Tensor], t: dict[str, Tensor]) -> Tensor:
    """Objectness focal loss + class CE + box L1 (+ attribute BCE, + mask BCE)."""
    loss = focal_loss(out["obj"], t["heat"])
    w = t["reg"]
    norm = w.sum().clamp(min=1)
    ce = F.cross_entropy(out["cls"], t["cls"].clamp(min=0), reduction="none")
    loss = loss + (ce * w).sum() / norm
    l1 = F.smooth_l1_loss(out["box"], t["box"], reduction="none", beta=0.2).sum(1)
    loss = loss + (l1 * w).sum() / norm
    if "attrs" in t and "attr" in out:
        bce = F.binary_cross_entropy_with_logits(out["attr"], t["attrs"], reduction="none").mean(1)
        loss = loss + 2.0 * (bce * w).sum() / norm
    if "obj_mask" in t and "proto" in out and t["obj_mask"].shape[0] > 0:
        loss = loss + mask_loss(out, t)
    return loss


def mask_loss(out: dict[str, Tensor], t: dict[str, Tensor]) -> Tensor:
    """BCE of each object's mask (coefficients at its centre × prototypes) inside its box."""
    coef, proto = out["coef"], out["proto"]  # (B, P, h, w), (B, P, h2, w2)
    b, p, h, w = coef.shape
    c = coef.permute(0, 2, 3, 1).reshape(b, h * w, p)[t["obj_image"], t["obj_cell"]]  # (G, P)
    logits = torch.einsum("gp,gphw->ghw", c, proto[t["obj_image"]])
    target = t["obj_mask"]
    g, h2, w2 = target.shape
    ys = (torch.arange(h2, device=coef.device).float() + 0.5) * 2
    xs = (torch.arange(w2, device=coef.device).float() + 0.5) * 2
    bx = t["obj_box"][:, :, None, None]  # (G, 4, 1, 1), grown by 2 px like at inference
    inside = (
        (ys[None, :, None] >= bx[:, 1] - 2) & (ys[None, :, None] <= bx[:, 3] + 2)
        & (xs[None, None, :] >= bx[:, 0] - 2) & (xs[None, None, :] <= bx[:, 2] + 2)
    ).float()
    bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    return ((bce * inside).sum((1, 2)) / inside.sum((1, 2)).clamp(min=1)).mean()


def hflip(x: Tensor, flip: Tensor) -> Tensor:
    """Mirror the items of a batch along the last axis where ``flip (B,)`` is true."""
    if not bool(flip.any()):
        return x
    return torch.where(flip.view((-1,) + (1,) * (x.dim() - 1)), x.flip(-1), x)


def translate(x: Tensor, shifts: Tensor) -> Tensor:
    """Shift each image of a ``(B, C, H, W)`` batch by its ``shifts[i] = (dy, dx)`` pixels,
    filling the uncovered border by repeating the edge.

    >>> x = torch.arange(9.).view(1, 1, 3, 3)
    >>> translate(x, torch.tensor([[0, 1]]))[0, 0]
    tensor([[1., 2., 2.],
            [4., 5., 5.],
            [7., 8., 8.]])
    """
    pad = int(shifts.abs().max()) if len(shifts) else 0
    if pad == 0:
        return x
    h, w = x.shape[-2:]
    xp = F.pad(x, (pad, pad, pad, pad), mode="replicate")
    out = [xp[i, :, pad + dy:pad + dy + h, pad + dx:pad + dx + w]
           for i, (dy, dx) in enumerate(shifts.tolist())]
    return torch.stack(out).contiguous(memory_format=torch.channels_last)


def flip_targets(t: dict[str, Tensor], flip: Tensor, width: int) -> dict[str, Tensor]:
    """CenterNet targets of horizontally mirrored images (``width`` a multiple of the stride).

    Cell j becomes w-1-j, so a centre offset from the cell centre changes sign; object masks,
    their centre cells and boxes mirror with the image.
    """
    if not bool(flip.any()):
        return t
    out = dict(t)
    for k in ("heat", "cls", "reg", "attrs"):
        if k in t:
            out[k] = hflip(t[k], flip)
    box = hflip(t["box"], flip)
    out["box"] = torch.cat([torch.where(flip.view(-1, 1, 1, 1), -box[:, :1], box[:, :1]),
                            box[:, 1:]], 1)
    if "obj_mask" in t and t["obj_mask"].shape[0] > 0:
        of = flip[t["obj_image"]]
        w = t["heat"].shape[-1]
        ci, cj = t["obj_cell"] // w, t["obj_cell"] % w
        out["obj_cell"] = torch.where(of, ci * w + (w - 1 - cj), t["obj_cell"])
        out["obj_mask"] = hflip(t["obj_mask"], of)
        b = t["obj_box"]
        mirrored = torch.stack([width - b[:, 2], b[:, 1], width - b[:, 0], b[:, 3]], 1)
        out["obj_box"] = torch.where(of[:, None], mirrored, b)
    return out
