"""A small MNIST classifier shipped with probgen: the feature map of FID/KID for 28×28 digits.

:class:`MnistClassifier` (98k parameters, 398 KB of weights) is a three-block CNN on ``1×28×28`` images scaled to
``[-1, 1]`` (the scaling of ``probgen.data.load_dataset("mnist")``). It plays, for MNIST, the role the 8×8
:class:`probgen.metrics.DigitsClassifier` plays for the digits and Inception-v3 for natural images:
:func:`mnist_features` (the 128-d penultimate layer) is the feature map to pass to
:func:`probgen.metrics.fid` / :func:`probgen.metrics.kid` (``features=mnist_features``), and :func:`mnist_probs`
feeds :func:`probgen.metrics.inception_score`.

The weights in ``probgen/metrics/weights/mnist_classifier.pt`` were produced by
``python scripts/train_mnist_classifier.py --data-dir DIR`` (seeded, CPU, one thread) on MNIST's 60,000
training images with small random shifts and pixel noise, so that the features stay stable on imperfect
generated samples; ``mnist_classifier.json`` beside them records the test accuracy on the 10,000 test images,
the seed, command and date. Scores computed with these features are comparable only with scores computed with
the same weights file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from probgen._checks import check_int, check_tensor

__all__ = [
    "MnistClassifier",
    "mnist_classifier",
    "mnist_features",
    "mnist_logits",
    "mnist_probs",
    "MNIST_WEIGHTS_PATH",
    "mnist_weights_info",
]

MNIST_WEIGHTS_PATH = Path(__file__).resolve().parent / "weights" / "mnist_classifier.pt"
_INFO_PATH = MNIST_WEIGHTS_PATH.with_suffix(".json")
_CACHE: dict[tuple[str, torch.dtype], MnistClassifier] = {}


class MnistClassifier(nn.Module):
    """CNN for ``1×28×28`` images in ``[-1, 1]``: features ``(B, 128)``, logits ``(B, 10)``.

    Architecture::

        conv3x3(1→16) ReLU, maxpool 2     ->  16×14×14
        conv3x3(16→32) ReLU, maxpool 2    ->  32×7×7
        conv3x3(32→64) ReLU, maxpool 2    ->  64×3×3
        flatten, linear(576→128) ReLU     ->  features (128)
        dropout(0.3), linear(128→10)      ->  logits (10)

    Example:
        >>> net = MnistClassifier()
        >>> net(torch.zeros(2, 1, 28, 28)).shape, net.features(torch.zeros(2, 1, 28, 28)).shape
        (torch.Size([2, 10]), torch.Size([2, 128]))
    """

    num_classes = 10
    num_features = 128

    def __init__(self, *, dropout: float = 0.3) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(64 * 3 * 3, self.num_features),
            nn.ReLU(),
        )
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(self.num_features, self.num_classes))

    def features(self, x: Tensor) -> Tensor:
        """Penultimate-layer features ``(B, 128)`` of images ``(B, 1, 28, 28)``."""
        return self.body(x)

    def forward(self, x: Tensor) -> Tensor:
        """Class logits ``(B, 10)`` of images ``(B, 1, 28, 28)``."""
        return self.head(self.body(x))


def mnist_weights_info() -> dict[str, Any]:
    """The JSON record written next to the shipped weights (test accuracy, seed, command, date)."""
    if not _INFO_PATH.exists():
        raise FileNotFoundError(f"{_INFO_PATH} is missing; rebuild it with scripts/train_mnist_classifier.py")
    return json.loads(_INFO_PATH.read_text())


def mnist_classifier(*, device: torch.device | str | None = None) -> MnistClassifier:
    """Load the shipped MNIST classifier, in eval mode, with its parameters frozen.

    The weights are a plain ``state_dict`` read with ``torch.load(weights_only=True)``.

    Example:
        >>> net = mnist_classifier()
        >>> bool(mnist_weights_info()["test_accuracy"] >= 0.98), net.training
        (True, False)
    """
    if not MNIST_WEIGHTS_PATH.exists():
        raise FileNotFoundError(f"the MNIST classifier weights are missing ({MNIST_WEIGHTS_PATH}); rebuild them with "
                                "`python scripts/train_mnist_classifier.py --data-dir DIR`")
    state = torch.load(MNIST_WEIGHTS_PATH, map_location="cpu", weights_only=True)
    net = MnistClassifier()
    net.load_state_dict(state)
    net.eval().requires_grad_(False)
    return net.to(device) if device is not None else net


def _run(x: Any, what: str, batch_size: int) -> Tensor:
    x = check_tensor("x", x, min_ndim=2)
    if x.dim() == 2 and x.shape[1] == 784:
        x = x.reshape(-1, 1, 28, 28)
    elif x.dim() == 3 and tuple(x.shape[1:]) == (28, 28):
        x = x.unsqueeze(1)
    elif not (x.dim() == 4 and tuple(x.shape[1:]) == (1, 28, 28)):
        raise ValueError(f"x must have shape (batch, 1, 28, 28), (batch, 28, 28) or (batch, 784), got {tuple(x.shape)}")
    batch_size = check_int("batch_size", batch_size, minimum=1)
    key = (str(x.device), x.dtype)
    if key not in _CACHE:
        _CACHE[key] = mnist_classifier(device=x.device).to(x.dtype)
    net = _CACHE[key]
    fn = net.features if what == "features" else net
    with torch.no_grad():
        return torch.cat([fn(x[i : i + batch_size]) for i in range(0, x.shape[0], batch_size)])


def mnist_features(x: Tensor, *, batch_size: int = 1024) -> Tensor:
    """Penultimate-layer features of the shipped MNIST classifier: the FID/KID feature map for 28×28 digits.

    Args:
        x: ``(B, 1, 28, 28)``, ``(B, 28, 28)`` or ``(B, 784)`` images scaled to ``[-1, 1]``; values outside that
            range are passed through unchanged (a metric should see what a model produces).
        batch_size: images per forward pass.

    Returns:
        ``(B, 128)`` non-negative features on ``x``'s device and dtype (computed without gradients).

    Example:
        >>> mnist_features(torch.zeros(3, 784)).shape
        torch.Size([3, 128])
    """
    return _run(x, "features", batch_size)


def mnist_logits(x: Tensor, *, batch_size: int = 1024) -> Tensor:
    """Class logits ``(B, 10)`` of the shipped MNIST classifier (inputs as in :func:`mnist_features`)."""
    return _run(x, "logits", batch_size)


def mnist_probs(x: Tensor, *, batch_size: int = 1024) -> Tensor:
    """Class probabilities ``p(y | x)``, ``(B, 10)``, of the shipped MNIST classifier."""
    return torch.softmax(mnist_logits(x, batch_size=batch_size), dim=-1)
