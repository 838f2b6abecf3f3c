"""Networks used as score, noise (epsilon) and energy models: MLPs, a small U-Net and time embeddings.

Every network acts per sample (GroupNorm, never BatchNorm), works under ``torch.func.vmap`` / ``vjp``
and takes only plain Python constructor arguments, returned by ``config()`` for checkpoints.
"""

from probgen.nn.embeddings import GaussianFourierFeatures, SinusoidalEmbedding, TIME_EMBEDDINGS, make_time_embedding
from probgen.nn.mlp import ACTIVATIONS, MLP, ConditionedMLP, make_activation
from probgen.nn.unet import UNet
from probgen.nn.ema import ema_update

__all__ = [
    "GaussianFourierFeatures",
    "SinusoidalEmbedding",
    "TIME_EMBEDDINGS",
    "make_time_embedding",
    "MLP",
    "ConditionedMLP",
    "ACTIVATIONS",
    "make_activation",
    "UNet",
    "ema_update",
]
