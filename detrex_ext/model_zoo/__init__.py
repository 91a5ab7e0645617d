"""Released checkpoints by name: configs, URLs, cached verified downloads.

>>> from detrex_ext import model_zoo
>>> model_zoo.list_models()                      # the released model names
>>> model = model_zoo.get("maskdino_r50_coco_instance_seg_50ep")   # build + download + load

Downloads are cached under ``$DETREX_CACHE/checkpoints`` (default ``~/.cache/detrex_ext``);
``DETREX_OFFLINE=1`` uses the cache only; ``DETREX_ZOO_MIRROR`` points to another copy of the files.
The table and the downloads are :mod:`detrex_ext.checkpoint.catalog` and
:mod:`detrex_ext.checkpoint.download` (the checkpointer resolves released names with them).
"""

from detrex_ext.checkpoint.catalog import (
    MODEL_ZOO,
    RELEASE_URL,
    ModelZooEntry,
    get_checkpoint,
    get_checkpoint_url,
    get_entry,
    list_models,
)
from detrex_ext.checkpoint.download import (
    ChecksumMismatchError,
    DownloadError,
    OfflineCacheMissError,
    cached_download,
    file_sha256,
    get_cache_dir,
    is_offline,
)

from .model_zoo import get, get_config, resolve_weights

__all__ = [
    "MODEL_ZOO",
    "RELEASE_URL",
    "ModelZooEntry",
    "get_entry",
    "list_models",
    "ChecksumMismatchError",
    "DownloadError",
    "OfflineCacheMissError",
    "cached_download",
    "file_sha256",
    "get_cache_dir",
    "is_offline",
    "get",
    "get_checkpoint",
    "get_checkpoint_url",
    "get_config",
    "resolve_weights",
]
