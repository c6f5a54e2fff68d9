from .blocks import Block, SelfAttention
from .decoder import CoarseToFineDecoder, PatchHead
from .fusion import FusionEncoder, SeedAttention
from .language import LanguageEncoder, sinusoidal_positions
from .m3att import M3Att, M3AttOutput
from .restr import ReSTR, ReSTROutput, build_model
from .vision import VisionEncoder, WeightsError, load_vit_weights

__all__ = [
    "Block", "SelfAttention", "CoarseToFineDecoder", "PatchHead", "FusionEncoder", "SeedAttention",
    "LanguageEncoder", "sinusoidal_positions", "ReSTR", "ReSTROutput", "build_model", "VisionEncoder",
    "WeightsError", "load_vit_weights", "M3Att", "M3AttOutput",
]
