"""The one image preprocessing of alray, shared by training, ``models add`` and the scorer.

Two steps, so the cheap part can run in read tasks and the array shipped between processes
stays small:

1. :func:`prepare_image` (per image, any process): bytes → decoded RGB → resized to the model's
   input size → ``uint8 (H, W, 3)`` array, plus the original ``(height, width)``.
2. :func:`to_tensor` (per batch, where the model runs): ``uint8 (N, H, W, 3)`` → float
   ``(N, 3, H, W)`` in [0, 1], normalised with ``(x - mean) / std`` when the model asks for it.

Resizing stretches the whole image to the input size (no crop, no letterbox), so a box in
input pixels maps back to the original image by scaling x and y independently.

>>> import io
>>> from PIL import Image
>>> buf = io.BytesIO(); Image.new("RGB", (40, 20), (255, 0, 0)).save(buf, "PNG")
>>> arr, (h, w) = prepare_image(buf.getvalue(), 32)
>>> arr.shape, arr.dtype.name, (h, w)
((32, 32, 3), 'uint8', (20, 40))
>>> to_tensor(arr[None]).shape
torch.Size([1, 3, 32, 32])
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image

Size = tuple[int, int]


class ImageDecodeError(ValueError):
    """The bytes are not an image alray can decode (corrupt, truncated, unknown format)."""


def as_size(size: int | Sequence[int]) -> Size:
    """``64`` → ``(64, 64)``; ``(h, w)`` stays; anything else raises ``ValueError``."""
    if isinstance(size, (int, np.integer)):
        h = w = int(size)
    else:
        vals = [int(v) for v in size]
        if len(vals) != 2:
            raise ValueError(f"an input size is H W (two numbers), got {list(size)}")
        h, w = vals
    if h < 8 or w < 8:
        raise ValueError(f"input size must be at least 8x8, got {h}x{w}")
    return h, w


def _open(data: bytes, draft: Size | None) -> tuple[Image.Image, Size]:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            orig = (img.height, img.width)
            if draft is not None and img.format == "JPEG":
                img.draft("RGB", (draft[1], draft[0]))
            img.load()  # force the full decode here, so truncation is caught here
    except Exception as e:  # PIL raises many types (OSError, SyntaxError, ValueError...)
        raise ImageDecodeError(f"cannot decode image ({len(data)} bytes): {e}") from None
    if img.mode != "RGB":
        img = img.convert("RGB")
    return img, orig


def decode(data: bytes) -> Image.Image:
    """Decode image bytes to an RGB PIL image; raise :class:`ImageDecodeError` on bad bytes."""
    return _open(data, None)[0]


def prepare_image(data: bytes, input_size: int | Sequence[int]) -> tuple[np.ndarray, Size]:
    """Bytes → ``(uint8 array (H, W, 3) at the input size, (orig_height, orig_width))``.

    JPEGs decode at a reduced scale when they are much larger than the input size (PIL's
    draft mode), which makes big photos several times cheaper.
    """
    h, w = as_size(input_size)
    img, orig = _open(data, (h, w))
    if (img.height, img.width) != (h, w):
        img = img.resize((w, h), Image.BILINEAR)
    return np.asarray(img, dtype=np.uint8), orig


def prepare_images(
    datas: Sequence[bytes], input_size: int | Sequence[int]
) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """Many images at once: ``(uint8 (N, H, W, 3), orig sizes (N, 2) int, indices that failed)``.

    Images that fail to decode are left out of the array and their indices returned, so a
    caller can skip and report them.
    """
    h, w = as_size(input_size)
    arrays, sizes, bad = [], [], []
    for i, d in enumerate(datas):
        try:
            a, s = prepare_image(d, (h, w))
        except ImageDecodeError:
            bad.append(i)
            continue
        arrays.append(a)
        sizes.append(s)
    batch = np.stack(arrays) if arrays else np.zeros((0, h, w, 3), np.uint8)
    return batch, np.asarray(sizes, dtype=np.int64).reshape(-1, 2), bad


def to_tensor(
    batch: np.ndarray | torch.Tensor,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    device: torch.device | str | None = None,
    channels_last: bool = False,
) -> torch.Tensor:
    """``uint8 (N, H, W, 3)`` → float32 ``(N, 3, H, W)`` in [0, 1], then ``(x - mean) / std``.

    A float tensor already ``(N, 3, H, W)`` is taken as prepared (only moved to ``device``).
    ``channels_last`` keeps the pixels' memory order (NHWC strides, no copy): convolutions
    train faster on CPU that way; the default gives a plain contiguous tensor, which any
    user model accepts.
    """
    if isinstance(batch, torch.Tensor) and batch.is_floating_point():
        if batch.ndim != 4 or batch.shape[1] != 3:
            raise ValueError(f"a float batch must be (N, 3, H, W), got {tuple(batch.shape)}")
        return batch.to(device) if device is not None else batch
    if not isinstance(batch, torch.Tensor):  # PIL arrays are read-only: torch wants writable
        batch = torch.from_numpy(np.require(batch, requirements=["C", "W"]))
    t = batch
    if t.ndim != 4 or t.shape[-1] != 3:
        raise ValueError(f"a uint8 batch must be (N, H, W, 3), got {tuple(t.shape)}")
    if device is not None:
        t = t.to(device)  # ship uint8 (4x smaller than float) to the GPU, convert there
    x = t.permute(0, 3, 1, 2).float().div_(255.0)
    if mean is not None or std is not None:
        m = torch.tensor(mean if mean is not None else (0.0, 0.0, 0.0), device=x.device)
        s = torch.tensor(std if std is not None else (1.0, 1.0, 1.0), device=x.device)
        x = (x - m.view(1, 3, 1, 1)) / s.view(1, 3, 1, 1)
    return x if channels_last else x.contiguous()
