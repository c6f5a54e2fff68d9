"""restr: ReSTR (Kim et al., CVPR 2022) reimplemented, with a reproduction book."""
from .config import Config, ConfigError, DataConfig, ModelConfig, TrainConfig, get_preset

__version__ = "0.1.0"
__all__ = ["Config", "ConfigError", "DataConfig", "ModelConfig", "TrainConfig", "get_preset", "__version__"]
