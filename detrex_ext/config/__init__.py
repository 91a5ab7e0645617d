"""Lazy configs: LazyCall, LazyConfig, instantiate, get_config (detectron2/detrex names).

A config is a tree of omegaconf nodes; ``L(Target)(**kwargs)`` records a call that
:func:`instantiate` makes later. Config files are plain Python that may import each other
relatively; :func:`get_config` loads the ones shipped with the package.
"""

from .config_loader import load_config_file
from .instantiate import InstantiationError, instantiate
from .lazy_call import L, LazyCall
from .lazy_config import LazyConfig
from .locate import locate, target_to_string
from .overrides import ConfigOverrideError, apply_overrides
from .packaged_configs import get_config, get_config_file, list_configs, try_get_key
from .serialization import UnsaveableConfigError

__all__ = [
    "L",
    "LazyCall",
    "LazyConfig",
    "instantiate",
    "get_config",
    "get_config_file",
    "list_configs",
    "try_get_key",
    "locate",
    "target_to_string",
    "load_config_file",
    "apply_overrides",
    "InstantiationError",
    "ConfigOverrideError",
    "UnsaveableConfigError",
]
