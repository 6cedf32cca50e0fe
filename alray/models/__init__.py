"""Models of the six families: small conv nets for CPU training, and the TorchScript convention
that built-in and user models (``alray models add``) share.

Model convention (TorchScript)
------------------------------
``forward(x)`` takes a float batch ``x (B, 3, H, W)``: RGB in [0, 1] at the registered input
size, already normalised as ``(x - mean) / std`` when mean/std were given. It returns:

=====================  ==================================================================
family                 ``forward(x)`` returns
=====================  ==================================================================
classifier             ``Tensor (B, C)`` class probabilities (rows sum to 1)
tagger                 ``Tensor (B, T)`` independent tag probabilities in [0, 1]
semantic_segmentor     ``Tensor (B, C, h, w)`` per-pixel class probabilities (sum to 1 over
                       C; class 0 is ``background``); any h, w (e.g. the input size)
detector               ``List[Dict[str, Tensor]]``, one dict per image: ``boxes (M, 4)`` xyxy
                       in input pixels, ``probs (M, C)`` class probabilities per object,
                       optional ``scores (M,)`` detection confidence (default: max prob)
instance_segmentor     detector keys + ``masks (M, H, W)`` probabilities (or 0/1) in input
                       pixels
attributor             ``boxes (M, 4)``, ``probs (M, A)`` attribute probabilities, optional
                       ``class_probs (M, C)`` object classes and ``scores (M,)``
=====================  ==================================================================

``C`` (or ``T``, ``A``) is the number of names registered as ``classes``. Probabilities, not
logits: registration runs a dummy batch and refuses outputs that do not match, saying what
was expected.

Monte-Carlo dropout: a model may export ``forward_mc(x, k: int)`` returning the same structure
with a K axis before the class axis (``(B, K, C)``, ``(B, K, C, h, w)``, ``probs (M, K, C)``).
Without it, alray runs ``forward`` K times with the model's ``Dropout`` modules switched to
training mode (batch norm stays in eval mode). A model without dropout gives K equal samples.

>>> import torch
>>> net = build_model("classifier", num_classes=3).eval()
>>> net(torch.rand(2, 3, 64, 64)).shape
torch.Size([2, 3])
>>> net.forward_mc(torch.rand(2, 3, 64, 64), 4).shape
torch.Size([2, 4, 3])
"""

from __future__ import annotations

import warnings

import torch
from torch import nn

from alray.families import check_family
from alray.models.nets import CenterNet, ImageHead, SemanticNet

__all__ = ["CenterNet", "ImageHead", "SemanticNet", "build_model", "load_script", "save_script",
           "to_script"]


def build_model(
    family: str, num_classes: int, *, num_attributes: int = 0, width: float = 1.0,
    dropout: float | None = None,
) -> nn.Module:
    """A fresh built-in net for a family.

    ``num_classes`` is C of ``probs`` (tags for the tagger, object classes otherwise, including
    ``background`` for semantic segmentation); ``num_attributes`` is A of the attributor.
    """
    check_family(family)
    if family == "attributor" and num_attributes < 1:
        raise ValueError("an attributor needs num_attributes >= 1")
    kw = {} if dropout is None else {"dropout": dropout}
    if family in ("classifier", "tagger"):
        return ImageHead(num_classes, family == "tagger", width=width, **kw)
    if family == "semantic_segmentor":
        return SemanticNet(num_classes, width=width, **kw)
    return CenterNet(family, num_classes, num_attributes=num_attributes, width=width, **kw)


def to_script(model: nn.Module) -> torch.jit.ScriptModule:
    """TorchScript of a model in eval mode (torch's deprecation notice silenced: TorchScript
    is still the one portable format that carries code and weights without Python)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.filterwarnings("ignore", message=".*torch.jit.*")
        return torch.jit.script(model.eval())


def save_script(model: torch.jit.ScriptModule) -> bytes:
    """Serialise a TorchScript module to bytes (for ``Store.write_bytes``)."""
    import io

    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*torch.jit.*")
        torch.jit.save(model, buf)
    return buf.getvalue()


def load_script(data: bytes, device: torch.device | str = "cpu") -> torch.jit.ScriptModule:
    """Load a TorchScript module from bytes onto a device, in eval mode."""
    import io

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*torch.jit.*")
        m = torch.jit.load(io.BytesIO(data), map_location=device)
    return m.eval()
