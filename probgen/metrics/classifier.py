"""A small digits classifier shipped with probgen, its feature map, and the Inception-style score.

The network (:class:`DigitsClassifier`, ~40k parameters) is a three-layer CNN on ``1×8×8`` images scaled
to ``[-1, 1]`` (the ``probgen.data.digits`` default). It plays, for 8×8 digits, the role Inception-v3
plays for natural images: :func:`digits_features` (the 64-d penultimate layer) is the default feature
map of :func:`probgen.metrics.fid` and a good one for :func:`probgen.metrics.kid`, and
:func:`digits_probs` feeds :func:`inception_score`.

The weights in ``probgen/metrics/weights/digits_classifier.pt`` were produced by
``scripts/train_digits_classifier.py`` (seeded, CPU, under two minutes) on the fixed train split of
:func:`probgen.data.digits`, with small random shifts and pixel noise so that the features stay stable
on imperfect generated samples; ``digits_classifier.json`` next to them records the test accuracy,
seed, command and date. Scores computed with these features are comparable only with scores computed
with the same weights file.

Inception-v3 features (torch-fidelity) are deliberately not wrapped: they would need a download, and
torch-fidelity is not a dependency. Pass any feature callable to :func:`probgen.metrics.fid` instead.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from probgen._checks import check_int, check_tensor

__all__ = [
    "DigitsClassifier",
    "digits_classifier",
    "digits_features",
    "digits_logits",
    "digits_probs",
    "inception_score",
    "WEIGHTS_PATH",
    "weights_info",
]

WEIGHTS_PATH = Path(__file__).resolve().parent / "weights" / "digits_classifier.pt"
_INFO_PATH = WEIGHTS_PATH.with_suffix(".json")
_CACHE: dict[tuple[str, torch.dtype], DigitsClassifier] = {}


class DigitsClassifier(nn.Module):
    """CNN for ``1×8×8`` digits in ``[-1, 1]``: features ``(B, 64)``, logits ``(B, 10)``.

    Architecture::

        conv3x3(1→16) ReLU, conv3x3(16→32) ReLU, maxpool 2   ->  32×4×4
        conv3x3(32→64) ReLU, maxpool 2                       ->  64×2×2
        flatten, linear(256→64) ReLU                          ->  features (64)
        dropout(0.3), linear(64→10)                           ->  logits (10)

    Example:
        >>> net = DigitsClassifier()
        >>> net(torch.zeros(2, 1, 8, 8)).shape, net.features(torch.zeros(2, 1, 8, 8)).shape
        (torch.Size([2, 10]), torch.Size([2, 64]))
    """

    num_classes = 10
    num_features = 64

    def __init__(self, *, dropout: float = 0.3) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(16, 32, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(256, self.num_features),
            nn.ReLU(),
        )
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(self.num_features, self.num_classes))

    def features(self, x: Tensor) -> Tensor:
        """Penultimate-layer features ``(B, 64)`` of images ``(B, 1, 8, 8)``."""
        return self.body(x)

    def forward(self, x: Tensor) -> Tensor:
        """Class logits ``(B, 10)`` of images ``(B, 1, 8, 8)``."""
        return self.head(self.body(x))


def weights_info() -> dict[str, Any]:
    """The JSON record written next to the shipped weights (test accuracy, seed, command, date)."""
    if not _INFO_PATH.exists():
        raise FileNotFoundError(f"{_INFO_PATH} is missing; rebuild it with scripts/train_digits_classifier.py")
    return json.loads(_INFO_PATH.read_text())


def digits_classifier(*, device: torch.device | str | None = None) -> DigitsClassifier:
    """Load the shipped digits classifier, in eval mode, with its parameters frozen.

    The weights are a plain ``state_dict`` read with ``torch.load(weights_only=True)``.

    Args:
        device: where to put the network (default CPU).

    Returns:
        A fresh :class:`DigitsClassifier` (float32) on ``device``.

    Example:
        >>> from probgen.data import digits
        >>> x, y = digits("test")
        >>> acc = (digits_classifier()(x).argmax(-1) == y).float().mean()
        >>> bool(acc >= 0.95)
        True
    """
    if not WEIGHTS_PATH.exists():
        raise FileNotFoundError(
            f"the digits classifier weights are missing ({WEIGHTS_PATH}); "
            "rebuild them with `python scripts/train_digits_classifier.py`"
        )
    state = torch.load(WEIGHTS_PATH, map_location="cpu", weights_only=True)
    net = DigitsClassifier()
    net.load_state_dict(state)
    net.eval().requires_grad_(False)
    return net.to(device) if device is not None else net


def _cached(device: torch.device, dtype: torch.dtype) -> DigitsClassifier:
    key = (str(device), dtype)
    if key not in _CACHE:
        _CACHE[key] = digits_classifier(device=device).to(dtype)
    return _CACHE[key]


def _as_images(x: Any) -> Tensor:
    x = check_tensor("x", x, min_ndim=2)
    if x.dim() == 2 and x.shape[1] == 64:
        return x.reshape(-1, 1, 8, 8)
    if x.dim() == 3 and tuple(x.shape[1:]) == (8, 8):
        return x.unsqueeze(1)
    if x.dim() == 4 and tuple(x.shape[1:]) == (1, 8, 8):
        return x
    raise ValueError(f"x must have shape (batch, 1, 8, 8), (batch, 8, 8) or (batch, 64), got {tuple(x.shape)}")


def _run(x: Any, what: str, batch_size: int) -> Tensor:
    images = _as_images(x)
    batch_size = check_int("batch_size", batch_size, minimum=1)
    net = _cached(images.device, images.dtype)
    fn = net.features if what == "features" else net
    with torch.no_grad():
        return torch.cat([fn(images[i : i + batch_size]) for i in range(0, images.shape[0], batch_size)])


def digits_features(x: Tensor, *, batch_size: int = 1024) -> Tensor:
    """Penultimate-layer features of the shipped classifier: the default FID/KID feature map for 8×8 data.

    Args:
        x: ``(B, 1, 8, 8)``, ``(B, 8, 8)`` or ``(B, 64)`` images scaled to ``[-1, 1]``; values outside
            that range are passed through unchanged (a metric should see what a model produces).
        batch_size: images per forward pass.

    Returns:
        ``(B, 64)`` non-negative features on ``x``'s device and dtype (computed without gradients).

    Example:
        >>> digits_features(torch.zeros(3, 64)).shape
        torch.Size([3, 64])
    """
    return _run(x, "features", batch_size)


def digits_logits(x: Tensor, *, batch_size: int = 1024) -> Tensor:
    """Class logits ``(B, 10)`` of the shipped classifier (inputs as in :func:`digits_features`)."""
    return _run(x, "logits", batch_size)


def digits_probs(x: Tensor, *, batch_size: int = 1024) -> Tensor:
    """Class probabilities ``p(y | x)``, ``(B, 10)``, of the shipped classifier.

    Example:
        >>> round(float(digits_probs(torch.zeros(1, 1, 8, 8)).sum()), 6)
        1.0
    """
    return torch.softmax(digits_logits(x, batch_size=batch_size), dim=-1)


def inception_score(
    p: Tensor,
    *,
    from_logits: bool = False,
    num_splits: int = 10,
) -> tuple[Tensor, Tensor]:
    """Inception-style score of class predictions: ``exp(E_x KL(p(y|x) || p(y)))``.

    The ``N`` rows are cut into ``num_splits`` consecutive splits; within split ``k``,
    :math:`\\hat p_k(y) = \\text{mean}_{x \\in k}\\, p(y \\mid x)` and

    .. math::

        \\mathrm{IS}_k = \\exp\\Big(\\frac{1}{|k|}\\sum_{x \\in k} \\sum_y p(y\\mid x)
        \\big(\\log p(y \\mid x) - \\log \\hat p_k(y)\\big)\\Big),

    the mean and (population) std of :math:`\\mathrm{IS}_k` over splits are returned. It lies in
    ``[1, K]``: 1 when every sample gets the same prediction, ``K`` when predictions are confident
    (one-hot) and the classes are used equally. It sees sharpness and class coverage of the
    classifier's predictions only — not within-class diversity, nor closeness to the real data.

    Args:
        p: ``(N, K)`` probabilities (rows summing to one) or logits with ``from_logits=True``,
            e.g. :func:`digits_probs` of generated digits.
        from_logits: treat ``p`` as logits (a log-softmax is applied).
        num_splits: number of splits, ``1 <= num_splits <= N``.

    Returns:
        ``(mean, std)``, two 0-d tensors in ``p``'s dtype and device.

    Reference:
        Salimans et al. (2016), "Improved techniques for training GANs", arXiv:1606.03498;
        Barratt, Sharma (2018), "A note on the Inception score", arXiv:1801.01973.

    Example:
        >>> probs = torch.eye(10).repeat(10, 1)  # confident, all classes used equally
        >>> mean, std = inception_score(probs)
        >>> round(float(mean), 4), round(float(std), 4)
        (10.0, 0.0)
    """
    p = check_tensor("p", p, ndim=2)
    num_splits = check_int("num_splits", num_splits, minimum=1, maximum=p.shape[0])
    if from_logits:
        logp = torch.log_softmax(p, dim=-1)
    else:
        tol = 1e-3 if p.dtype == torch.float32 else 1e-8
        if bool((p < 0).any()) or bool(((p.sum(-1) - 1).abs() > tol).any()):
            raise ValueError(
                "p must hold probabilities (non-negative rows summing to 1); "
                "pass from_logits=True for logits"
            )
        logp = torch.log(p.clamp_min(torch.finfo(p.dtype).tiny))
    probs = logp.exp()
    scores = []
    for chunk_p, chunk_logp in zip(probs.tensor_split(num_splits), logp.tensor_split(num_splits)):
        log_marginal = torch.logsumexp(chunk_logp, dim=0) - math.log(chunk_logp.shape[0])
        kl = (chunk_p * (chunk_logp - log_marginal)).sum(-1).mean()
        scores.append(kl.exp())
    s = torch.stack(scores)
    return s.mean(), s.std(correction=0)
