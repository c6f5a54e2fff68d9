"""Weight initialisation schemes (``ModelConfig.init``).

``default`` leaves every layer as PyTorch (and timm, for the ViT) initialise it.
``release`` is the authors' code (github.com/SouthFlame/restr): every Linear layer
normal(0, 0.02) truncated at +-2 (absolute, i.e. never in practice) with a zero bias,
LayerNorms at weight 1 and bias 0, the decoder's 1 x 1 projections xavier-uniform, the
ViT's patch embedding xavier-uniform with a zero bias and its class token and position
embeddings normal(0, 0.02). The two D x D matrices of the release head (normal(0,
D^-0.5)) and the class seed (normal(0, 0.02)) are initialised where they are defined.
"""
from __future__ import annotations

from torch import nn

LINEAR_STD = 0.02


def release_init_(module: nn.Module) -> None:
    """Linear layers normal(0, 0.02) (truncated at +-2), zero bias; LayerNorms 1 and 0."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=LINEAR_STD, a=-2.0, b=2.0)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm) and m.elementwise_affine:
            nn.init.ones_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def xavier_init_(module: nn.Module) -> None:
    """Every Linear or Conv2d weight xavier-uniform, biases zero (the release's decoder)."""
    for m in module.modules():
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
