"""TorchScript-friendly building blocks: conv blocks, the shared backbone, box decoding, NMS."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class ConvBN(nn.Sequential):
    """3×3 (or k×k) convolution + batch norm + ReLU."""

    def __init__(self, cin: int, cout: int, stride: int = 1, k: int = 3):
        super().__init__(
            nn.Conv2d(cin, cout, k, stride, k // 2, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True),
        )


class Backbone(nn.Module):
    """A small conv net: feature maps at strides 2, 4, 8 and 16.

    About 10 M multiply-adds for a 64×64 image at width 1: cheap enough to train on a laptop
    CPU, deep enough (receptive field ≈ 85 px at stride 16) for shapes filling a 64×64 image.
    """

    def __init__(self, width: float = 1.0):
        super().__init__()
        c = [max(8, int(round(v * width))) for v in (16, 32, 64, 96)]
        self.channels = c
        self.s2 = ConvBN(3, c[0], 2)
        self.s4 = nn.Sequential(ConvBN(c[0], c[1], 2), ConvBN(c[1], c[1]))
        self.s8 = nn.Sequential(ConvBN(c[1], c[2], 2), ConvBN(c[2], c[2]))
        self.s16 = nn.Sequential(ConvBN(c[2], c[3], 2), ConvBN(c[3], c[3]))

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        f2 = self.s2(x)
        f4 = self.s4(f2)
        f8 = self.s8(f4)
        f16 = self.s16(f8)
        return f2, f4, f8, f16


def upsample_to(x: Tensor, ref: Tensor) -> Tensor:
    return F.interpolate(x, size=(ref.shape[-2], ref.shape[-1]), mode="bilinear",
                         align_corners=False)


class Neck(nn.Module):
    """A light FPN: stride-16 and stride-8 context added into the stride-4 map (``out``
    channels) and, when ``out2 > 0``, into a stride-2 map of ``out2`` channels (kept narrow:
    at stride 2 every channel costs four times as much)."""

    def __init__(self, channels: list[int], out: int, out2: int = 0):
        super().__init__()
        self.lat16 = nn.Conv2d(channels[3], channels[2], 1)
        self.lat8 = nn.Conv2d(channels[2], channels[1], 1)
        self.out4 = ConvBN(channels[1], out)
        self.with_s2 = out2 > 0
        self.lat4 = nn.Conv2d(out, channels[0], 1)
        self.out2 = ConvBN(channels[0], max(out2, 1))

    def forward(
        self, f2: Tensor, f4: Tensor, f8: Tensor, f16: Tensor
    ) -> tuple[Tensor, Tensor]:
        n8 = f8 + upsample_to(self.lat16(f16), f8)
        n4 = self.out4(f4 + upsample_to(self.lat8(n8), f4))
        if self.with_s2:
            return n4, self.out2(f2 + upsample_to(self.lat4(n4), f2))
        return n4, n4


def box_iou(a: Tensor, b: Tensor) -> Tensor:
    """IoU matrix of xyxy boxes (len(a), len(b))."""
    lt = torch.maximum(a[:, None, :2], b[None, :, :2])
    rb = torch.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    area_a = (a[:, 2:] - a[:, :2]).clamp(min=0).prod(-1)
    area_b = (b[:, 2:] - b[:, :2]).clamp(min=0).prod(-1)
    return inter / (area_a[:, None] + area_b[None, :] - inter).clamp(min=1e-9)


def nms(boxes: Tensor, scores: Tensor, iou_threshold: float) -> Tensor:
    """Indices kept by greedy non-maximum suppression, by descending score."""
    order = torch.argsort(scores, descending=True)
    if order.numel() == 0:
        return order
    iou = box_iou(boxes[order], boxes[order])
    n = int(order.numel())
    keep = torch.ones(n, dtype=torch.bool, device=boxes.device)
    for i in range(n):
        if bool(keep[i]):
            later = torch.arange(n, device=boxes.device) > i
            keep = keep & ~((iou[i] > iou_threshold) & later)
    return order[keep]


def decode_centers(
    obj_logits: Tensor, box_raw: Tensor, stride: int, score_threshold: float, max_det: int,
    nms_iou: float, height: int, width: int,
) -> tuple[list[Tensor], list[Tensor], list[Tensor]]:
    """Peaks of the objectness map → per image (boxes xyxy, scores, flat cell indices).

    ``obj_logits (B,1,h,w)``, ``box_raw (B,4,h,w)``: centre offset from the cell centre and
    log size, in cells. Peaks are local maxima (3×3) above the threshold, at most ``max_det``,
    then class-agnostic NMS.
    """
    heat = torch.sigmoid(obj_logits)
    peaks = heat == F.max_pool2d(heat, 3, 1, 1)
    heat = torch.where(peaks, heat, torch.zeros_like(heat))
    b, _, h, w = heat.shape
    flat = heat.reshape(b, h * w)
    k = min(max_det, h * w)
    top_s, top_i = torch.topk(flat, k, dim=1)
    raw = box_raw.reshape(b, 4, h * w)
    boxes_out: list[Tensor] = []
    scores_out: list[Tensor] = []
    cells_out: list[Tensor] = []
    for i in range(b):
        m = top_s[i] >= score_threshold
        idx = top_i[i][m]
        s = top_s[i][m]
        r = raw[i][:, idx]
        cy = (torch.div(idx, w, rounding_mode="floor").float() + 0.5 + r[1]) * stride
        cx = ((idx % w).float() + 0.5 + r[0]) * stride
        bw = torch.exp(r[2].clamp(-6.0, 6.0)) * stride
        bh = torch.exp(r[3].clamp(-6.0, 6.0)) * stride
        boxes = torch.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], dim=1)
        boxes = torch.stack([
            boxes[:, 0].clamp(0.0, float(width)), boxes[:, 1].clamp(0.0, float(height)),
            boxes[:, 2].clamp(0.0, float(width)), boxes[:, 3].clamp(0.0, float(height)),
        ], dim=1)
        keep = nms(boxes, s, nms_iou)
        boxes_out.append(boxes[keep])
        scores_out.append(s[keep])
        cells_out.append(idx[keep])
    return boxes_out, scores_out, cells_out


def gather_cells(x: Tensor, i: int, cells: Tensor) -> Tensor:
    """Feature vectors ``(M, F)`` of image ``i`` of ``x (B,F,h,w)`` at flat cell indices."""
    f = x.shape[1]
    return x[i].reshape(f, -1)[:, cells].t()
