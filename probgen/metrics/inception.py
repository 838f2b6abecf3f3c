"""InceptionV3 features through torch-fidelity — only from weights already on disk, never downloaded.

FID and the Inception score of the literature use InceptionV3 pool features (2048-d) and logits. probgen does not
depend on torch-fidelity and never fetches weights at run time; when both are available locally (``pip install
torch-fidelity`` and the weights file ``weights-inception-2015-12-05-6726825d.pth`` placed in torch's hub
checkpoint folder or passed as ``weights_path``), ``fid(x, y, features="inception")`` uses them. For 8×8 digits
the shipped digits classifier (``features="digits"``) is the default and needs nothing else.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import Tensor

from probgen._checks import check_tensor

__all__ = ["INCEPTION_WEIGHTS_FILE", "inception_weights_path", "inception_features"]

#: the file torch-fidelity's InceptionV3 (the TF-compatible FID network) loads its weights from
INCEPTION_WEIGHTS_FILE = "weights-inception-2015-12-05-6726825d.pth"


def inception_weights_path(weights_path: str | os.PathLike | None = None) -> Path:
    """Where the InceptionV3 weights must already be: ``weights_path`` or torch's hub checkpoint folder.

    Raises:
        ImportError: torch-fidelity is not installed.
        FileNotFoundError: the weights are not on disk (probgen never downloads them).
    """
    try:
        import torch_fidelity  # noqa: F401
    except ImportError:
        raise ImportError(
            "features='inception' needs torch-fidelity (pip install torch-fidelity) and its InceptionV3 weights "
            "on disk; for 8x8 digits use features='digits', or pass any feature callable"
        ) from None
    path = Path(weights_path) if weights_path is not None else Path(torch.hub.get_dir()) / "checkpoints" / INCEPTION_WEIGHTS_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"InceptionV3 weights not found at {str(path)!r}; probgen never downloads them at run time: place "
            f"{INCEPTION_WEIGHTS_FILE} there (or pass weights_path=...)"
        )
    return path


def inception_features(x: Tensor, *, weights_path: str | os.PathLike | None = None,
                       data_range: tuple[float, float] = (-1.0, 1.0)) -> Tensor:
    """2048-d InceptionV3 pool features of images ``x: (B, C, H, W)`` with values in ``data_range``.

    Gray images are repeated to three channels; torch-fidelity resizes to 299×299 itself.
    """
    check_tensor("x", x, ndim=4)
    path = inception_weights_path(weights_path)
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    net = FeatureExtractorInceptionV3("inception-v3-compat", ["2048"], feature_extractor_weights_path=str(path))
    net = net.to(x.device).eval()
    low, high = data_range
    images = ((x - low) / (high - low)).clamp(0, 1).mul(255).round().to(torch.uint8)
    if images.shape[1] == 1:
        images = images.expand(-1, 3, -1, -1)
    with torch.no_grad():
        (feats,) = net(images)
    return feats.reshape(len(x), -1)
