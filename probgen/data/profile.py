"""What a data set *is* — its value type, event shape and size, computed from the tensor, never from its
name — and which row of the recipes' settings table that makes it.

The command line's defaults are chosen by :func:`data_profile`: a user's 2-D ``.npy`` with the same points as
``8gaussians`` gets exactly the settings ``--data 8gaussians`` gets. Rows (:data:`PROFILE_ROWS`, first
match wins):

============  ===========================================================================
row           the data
============  ===========================================================================
``2d``        continuous vectors of ``D = 2``
``tabular``   continuous or quantized vectors of ``3 <= D <= 64`` (low-dimensional tabular data)
``binary``    vectors with values in ``{0, 1}``
``grayscale`` images ``1 x H x W`` (any value type)
``colour``    images ``3 x H x W`` (any value type)
``other``     anything else (e.g. continuous vectors of ``D > 64``): each family's general default
============  ===========================================================================

Value types: ``binary`` (every value is 0 or 1), ``quantized`` (at most :data:`MAX_LEVELS` values on an
evenly spaced grid ``low + k (high - low) / (L - 1)``, e.g. the digits' 17 levels or 8-bit pixels),
``continuous`` otherwise.

Example:
    >>> import torch
    >>> p = data_profile(torch.randn(1000, 2))
    >>> p.row, p.value_type, p.event_shape, p.size
    ('2d', 'continuous', (2,), 1000)
    >>> data_profile(torch.randint(0, 17, (500, 1, 8, 8)) / 8.0 - 1).describe()
    'grayscale: quantized to 17 levels in [-1, 1], image 1x8x8, N = 500'
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["DataProfile", "PROFILE_ROWS", "VALUE_TYPES", "MAX_LEVELS", "data_profile"]

VALUE_TYPES: tuple[str, ...] = ("continuous", "quantized", "binary")
#: the most distinct values an evenly spaced grid may have and still count as quantized data (8-bit pixels)
MAX_LEVELS = 256
#: (row, what data it takes), in the order they are tried
PROFILE_ROWS: tuple[tuple[str, str], ...] = (
    ("2d", "continuous vectors of D = 2"),
    ("tabular", "continuous or quantized vectors of 3 <= D <= 64"),
    ("binary", "vectors with values in {0, 1}"),
    ("grayscale", "images 1xHxW (any value type)"),
    ("colour", "images 3xHxW (any value type)"),
    ("other", "anything else (e.g. continuous vectors of D > 64)"),
)
_SAMPLE = 100_000  # values looked at first to rule out a grid cheaply


@dataclass(frozen=True)
class DataProfile:
    """What a data set is.

    Attributes:
        value_type: ``"continuous"``, ``"quantized"`` or ``"binary"``.
        num_levels: the number of grid levels ``L`` of quantized data (2 for binary), else ``None``.
        value_range: ``(low, high)`` of the grid (quantized, binary) or of the values (continuous).
        event_shape: shape of one point: ``(D,)`` for vectors, ``(C, H, W)`` for images.
        size: the number of points ``N``.
        row: the settings row (:data:`PROFILE_ROWS`) the recipes read.
    """

    value_type: str
    num_levels: int | None
    value_range: tuple[float, float]
    event_shape: tuple[int, ...]
    size: int
    row: str

    @property
    def dim(self) -> int:
        """Values per point, ``D`` or ``C * H * W``."""
        n = 1
        for s in self.event_shape:
            n *= s
        return n

    def describe(self) -> str:
        """One line: the row and why (value type, event shape, size)."""
        if self.value_type == "quantized":
            values = f"quantized to {self.num_levels} levels in [{self.value_range[0]:g}, {self.value_range[1]:g}]"
        else:
            values = self.value_type
        if len(self.event_shape) == 1:
            shape = f"vector D = {self.event_shape[0]}"
        elif len(self.event_shape) == 3:
            shape = "image " + "x".join(str(s) for s in self.event_shape)
        else:
            shape = "event " + "x".join(str(s) for s in self.event_shape)
        return f"{self.row}: {values}, {shape}, N = {self.size:,}"


def _grid(x: Tensor) -> tuple[int, float, float] | None:
    """``(L, low, high)`` when every value of ``x`` lies on an evenly spaced grid of at most MAX_LEVELS levels."""
    flat = x.reshape(-1)
    if flat.numel() == 0:
        return None
    head = torch.unique(flat[:_SAMPLE])
    if head.numel() > MAX_LEVELS:
        return None
    low, high = float(flat.min()), float(flat.max())
    if high == low:
        return 1, low, high
    if head.numel() >= 2:
        step = float((head[1:] - head[:-1]).min())
    else:
        step = high - low
    levels = round((high - low) / step) + 1
    if levels > MAX_LEVELS or levels < 2:
        return None
    step = (high - low) / (levels - 1)
    for chunk in flat.split(1 << 20):  # every value on the grid, a chunk at a time
        k = (chunk.double() - low) / step
        if float((k - k.round()).abs().max()) > 1e-3:
            return None
    return levels, low, high


def data_profile(data: Tensor, *, event_shape: tuple[int, ...] | None = None) -> DataProfile:
    """The profile of ``data`` (``(N, *event_shape)``; a :class:`probgen.data.DataSet` is profiled by its
    training split).

    Args:
        data: a tensor ``(N, *event_shape)`` with ``N >= 1``, or a ``DataSet``.
        event_shape: overrides ``data.shape[1:]`` (e.g. to read flat vectors as images).

    Returns:
        A :class:`DataProfile`.

    Raises:
        TypeError: ``data`` is neither a tensor nor a data set.
        ValueError: fewer than one point, or an event shape that does not match.
    """
    train = getattr(data, "train", data)
    if not isinstance(train, Tensor):
        raise TypeError(f"data must be a tensor (N, *event_shape) or a DataSet, got {type(data).__name__}")
    if train.dim() < 2 or train.shape[0] < 1:
        raise ValueError(f"data must have shape (N, *event_shape) with N >= 1, got {tuple(train.shape)}")
    shape = tuple(int(s) for s in (event_shape if event_shape is not None else train.shape[1:]))
    n = int(train.shape[0])
    if event_shape is not None:
        numel = 1
        for s in shape:
            numel *= s
        if numel != train[0].numel():
            raise ValueError(f"event_shape {shape} does not match data of shape {tuple(train.shape)}")
    x = train.detach()
    grid = _grid(x)
    if getattr(data, "num_levels", None) == 2 and getattr(data, "batch_transform", None) is not None:
        # a data set binarized afresh every batch (dynamic binarization of MNIST): its training split holds
        # the grey levels the Bernoulli draws come from, but the model only ever sees {0, 1}
        value_type, levels, value_range = "binary", 2, (0.0, 1.0)
    elif grid is not None and grid[0] <= 2 and set(torch.unique(x.reshape(-1)[:_SAMPLE]).tolist()) <= {0.0, 1.0} \
            and grid[1] >= 0.0 and grid[2] <= 1.0:
        value_type, levels, value_range = "binary", 2, (0.0, 1.0)
    elif grid is not None and grid[0] >= 2:
        value_type, levels, value_range = "quantized", grid[0], (grid[1], grid[2])
    else:
        value_type, levels = "continuous", None
        value_range = (float(x.min()), float(x.max()))
    return DataProfile(value_type, levels, value_range, shape, n, _row(value_type, shape))


def _row(value_type: str, shape: tuple[int, ...]) -> str:
    if len(shape) == 1:
        d = shape[0]
        if value_type == "continuous" and d == 2:
            return "2d"
        if value_type != "binary" and 3 <= d <= 64:
            return "tabular"
        if value_type == "binary":
            return "binary"
    if len(shape) == 3 and shape[0] == 1:
        return "grayscale"
    if len(shape) == 3 and shape[0] == 3:
        return "colour"
    return "other"
