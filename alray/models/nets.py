"""alray's built-in networks, one per family, all TorchScript-able.

Every net has

- ``dense(x)``: raw outputs (logits) as a ``dict[str, Tensor]``, what training uses;
- ``forward(x)``: the family's output for a batch (see :mod:`alray.models` for the convention);
- ``forward_mc(x, k)``: the same with K Monte-Carlo-dropout samples of the class / tag /
  attribute probabilities. The backbone runs once and only the small head is sampled (dropout
  sits right before the last layer), so K samples cost little more than one pass; detector-like
  nets keep the objects of the deterministic pass and sample their probabilities.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from alray.models._ops import Backbone, ConvBN, Neck, decode_centers, gather_cells, upsample_to


class ImageHead(nn.Module):
    """Classifier (softmax over C) or tagger (sigmoid per tag): pooled features → linear."""

    def __init__(self, num_outputs: int, multi_label: bool, width: float = 1.0,
                 dropout: float = 0.3):
        super().__init__()
        self.backbone = Backbone(width)
        c = self.backbone.channels
        self.multi_label = multi_label
        self.p = dropout
        self.dropout = nn.Dropout(dropout)
        # average and max pooling of two scales: max pooling keeps small objects visible
        self.fc = nn.Linear(2 * (c[2] + c[3]), num_outputs)

    def features(self, x: Tensor) -> Tensor:
        _, _, f8, f16 = self.backbone(x)
        return torch.cat([f8.mean((2, 3)), f8.amax((2, 3)), f16.mean((2, 3)), f16.amax((2, 3))], 1)

    def dense(self, x: Tensor) -> dict[str, Tensor]:
        return {"logits": self.fc(self.dropout(self.features(x)))}

    def _probs(self, logits: Tensor) -> Tensor:
        return torch.sigmoid(logits) if self.multi_label else torch.softmax(logits, -1)

    def forward(self, x: Tensor) -> Tensor:
        return self._probs(self.dense(x)["logits"])

    @torch.jit.export
    def forward_mc(self, x: Tensor, k: int) -> Tensor:
        """``(B, K, C)`` probabilities from K dropout samples of the head."""
        v = self.features(x)
        b = v.shape[0]
        vk = v.unsqueeze(1).expand(b, k, v.shape[1])
        return self._probs(self.fc(F.dropout(vk, self.p, True)))


class SemanticNet(nn.Module):
    """Semantic segmentation: FPN features at stride 2 → per-pixel softmax over C classes."""

    def __init__(self, num_classes: int, width: float = 1.0, dropout: float = 0.2):
        super().__init__()
        self.backbone = Backbone(width)
        c = self.backbone.channels
        s2 = c[0] + 8
        self.neck = Neck(c, c[1], out2=s2)
        self.refine = ConvBN(s2 + 3, s2)  # the RGB at stride 2 sharpens edges
        self.p = dropout
        self.dropout = nn.Dropout2d(dropout)
        self.cls = nn.Conv2d(s2, num_classes, 1)

    def features(self, x: Tensor) -> Tensor:
        f2, f4, f8, f16 = self.backbone(x)
        _, n2 = self.neck(f2, f4, f8, f16)
        small = F.avg_pool2d(x, 2)
        return self.refine(torch.cat([n2, upsample_to(small, n2)], 1))

    def dense(self, x: Tensor) -> dict[str, Tensor]:
        logits = self.cls(self.dropout(self.features(x)))
        return {"logits": upsample_to(logits, x)}

    def forward(self, x: Tensor) -> Tensor:
        return torch.softmax(self.dense(x)["logits"], 1)

    @torch.jit.export
    def forward_mc(self, x: Tensor, k: int) -> Tensor:
        """``(B, K, C, H, W)``; the K head samples run one at a time to bound memory."""
        feat = self.features(x)
        outs: list[Tensor] = []
        for _ in range(k):
            logits = self.cls(F.dropout2d(feat, self.p, True))
            outs.append(torch.softmax(upsample_to(logits, x), 1))
        return torch.stack(outs, 1)


class CenterNet(nn.Module):
    """One-stage detector on a stride-4 grid, CenterNet style, for three families.

    Per cell: objectness (a peak at each object centre), box (centre offset + log size, in
    cells), class logits; ``attributor`` adds attribute logits, ``instance_segmentor`` adds
    mask coefficients that combine a few stride-2 prototype masks (YOLACT style).
    """

    def __init__(
        self,
        family: str,
        num_classes: int,
        num_attributes: int = 0,
        width: float = 1.0,
        dropout: float = 0.3,
        score_threshold: float = 0.3,
        max_det: int = 50,
        nms_iou: float = 0.6,
        num_protos: int = 12,
    ):
        super().__init__()
        self.family = family
        self.with_masks = family == "instance_segmentor"
        self.with_attrs = family == "attributor"
        self.stride = 4
        self.score_threshold = score_threshold
        self.max_det = max_det
        self.nms_iou = nms_iou
        self.p = dropout
        self.backbone = Backbone(width)
        c = self.backbone.channels
        hc = c[1] + c[0]
        s2 = c[0] + 8
        self.neck = Neck(c, hc, out2=s2 if self.with_masks else 0)
        self.head = ConvBN(hc, hc)
        self.dropout = nn.Dropout(dropout)
        self.obj = nn.Conv2d(hc, 1, 1)
        self.box = nn.Conv2d(hc, 4, 1)
        self.cls = nn.Conv2d(hc, num_classes, 1)
        self.attr = nn.Conv2d(hc, max(num_attributes, 1), 1)
        self.coef = nn.Conv2d(hc, num_protos, 1)
        self.proto = nn.Sequential(ConvBN(s2, s2), nn.Conv2d(s2, num_protos, 1))
        nn.init.constant_(self.obj.bias, -2.2)  # start near a 10% prior: stable focal loss
        nn.init.zeros_(self.box.bias)

    def dense(self, x: Tensor) -> dict[str, Tensor]:
        f2, f4, f8, f16 = self.backbone(x)
        n4, n2 = self.neck(f2, f4, f8, f16)
        h = self.head(n4)
        hd = self.dropout(h)
        out = {"feat": h, "obj": self.obj(h), "box": self.box(h), "cls": self.cls(hd)}
        if self.with_attrs:
            out["attr"] = self.attr(hd)
        if self.with_masks:
            out["coef"] = self.coef(h)
            out["proto"] = self.proto(n2)
        return out

    def _masks(self, coef: Tensor, proto: Tensor, boxes: Tensor, x: Tensor) -> Tensor:
        """``(M, H, W)`` mask probabilities, zero outside each (slightly grown) box."""
        hgt, wid = x.shape[-2], x.shape[-1]
        if coef.shape[0] == 0:
            return torch.zeros((0, hgt, wid), dtype=x.dtype, device=x.device)
        m = torch.einsum("mp,phw->mhw", coef, proto).unsqueeze(0)
        m = torch.sigmoid(F.interpolate(m, size=(hgt, wid), mode="bilinear",
                                        align_corners=False)[0])
        ys = torch.arange(hgt, device=x.device).float() + 0.5
        xs = torch.arange(wid, device=x.device).float() + 0.5
        inside_y = (ys[None, :] >= boxes[:, 1:2] - 1) & (ys[None, :] <= boxes[:, 3:4] + 1)
        inside_x = (xs[None, :] >= boxes[:, 0:1] - 1) & (xs[None, :] <= boxes[:, 2:3] + 1)
        return m * (inside_y[:, :, None] & inside_x[:, None, :]).float()

    def _records(self, x: Tensor, k: int) -> list[dict[str, Tensor]]:
        d = self.dense(x)
        boxes, scores, cells = decode_centers(
            d["obj"], d["box"], self.stride, self.score_threshold, self.max_det, self.nms_iou,
            int(x.shape[-2]), int(x.shape[-1]),
        )
        out: list[dict[str, Tensor]] = []
        for i in range(len(boxes)):
            feat = gather_cells(d["feat"], i, cells[i])  # (M, F)
            if k > 0:  # K dropout samples of the last layer at the objects' cells
                m = feat.shape[0]
                feat = F.dropout(feat.unsqueeze(1).expand(m, k, feat.shape[1]), self.p, True)
            cls_w = self.cls.weight.flatten(1)
            rec = {"boxes": boxes[i], "scores": scores[i]}
            class_probs = torch.softmax(F.linear(feat, cls_w, self.cls.bias), -1)
            if self.with_attrs:
                attr_w = self.attr.weight.flatten(1)
                rec["probs"] = torch.sigmoid(F.linear(feat, attr_w, self.attr.bias))
                # object classes come from the deterministic pass: K samples are for attributes
                det = gather_cells(d["feat"], i, cells[i])
                rec["class_probs"] = torch.softmax(F.linear(det, cls_w, self.cls.bias), -1)
            else:
                rec["probs"] = class_probs
            if self.with_masks:
                coef = gather_cells(d["coef"], i, cells[i])
                rec["masks"] = self._masks(coef, d["proto"][i], boxes[i], x)
            out.append(rec)
        return out

    def forward(self, x: Tensor) -> list[dict[str, Tensor]]:
        return self._records(x, 0)

    @torch.jit.export
    def forward_mc(self, x: Tensor, k: int) -> list[dict[str, Tensor]]:
        """Records whose ``probs`` are ``(M, K, C)`` (attributor: ``(M, K, A)``)."""
        return self._records(x, k)
