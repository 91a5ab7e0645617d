"""The table of released Mask DINO checkpoints.

Every entry is named after the config that builds its model (``projects/maskdino/configs/<name>.py``).
The files live on the ``maskdino-v0.1.0`` release of ``IDEA-Research/detrex-storage``; the metrics
are the ones the official README reports for them (COCO val2017, ADE20K val, Cityscapes val).

``sha256`` is ``None`` for every entry: the publishers give no checksum, and a value we have not
computed from the real file ourselves would only turn a good download into an error. The first
download of a file records its sha256 next to it in the cache (see :mod:`.download`), and later
loads are checked against that record.

``get_checkpoint(name)`` gives the verified local file of a name. ``DETREX_ZOO_MIRROR`` replaces
the release location by another base URL or a local directory holding the same file names (for
mirrors, air-gapped machines, or a local test server); a mirror may hold ``<file>.sha256`` records
(``sha256sum`` format) next to the files: they are checked when the table has no digest.

The checkpointer resolves names through this module; :mod:`detrex_ext.model_zoo` builds on it.
"""

from __future__ import annotations

import difflib
import logging
import os
import re
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .download import cached_download, get_cache_dir, is_offline, is_url, resolve_local_file

logger = logging.getLogger(__name__)

RELEASE_URL = "https://github.com/IDEA-Research/detrex-storage/releases/download/maskdino-v0.1.0"


@dataclass(frozen=True)
class ModelZooEntry:
    """One released checkpoint.

    Attributes:
        name: model name = config name without ``.py``.
        task: ``"instance"``, ``"panoptic"`` or ``"semantic"``.
        dataset: the dataset it was trained and evaluated on.
        backbone: backbone name as used in the paper.
        filename: file name on the release (also the cache file name).
        metrics: reported metrics, keyed like the evaluators' flattened results
            (``"segm/AP"``, ``"bbox/AP"``, ``"panoptic_seg/PQ"``, ``"sem_seg/mIoU"``), in percent.
        sha256: hex digest of the file when known, else ``None``.
        params_m: parameter count in millions when reported.
        notes: anything a user should know when choosing or checking this model.
    """

    name: str
    task: str
    dataset: str
    backbone: str
    filename: str
    metrics: dict[str, float] = field(default_factory=dict)
    sha256: str | None = None
    params_m: float | None = None
    notes: str = ""

    @property
    def config_path(self) -> str:
        """Path understood by :func:`detrex_ext.config.get_config`."""
        return f"maskdino/{self.name}.py"

    @property
    def url(self) -> str:
        return f"{RELEASE_URL}/{self.filename}"


_ENTRIES = [
    ModelZooEntry(
        name="maskdino_r50_coco_instance_seg_50ep",
        task="instance",
        dataset="COCO 2017",
        backbone="R50",
        filename="maskdino_r50_50ep_300q_hid2048_3sd1_instance_maskenhanced_mask46.3ap_box51.7ap.pth",
        metrics={"segm/AP": 46.3, "bbox/AP": 51.7},
        params_m=52.1,
        notes="Reference model: encoder FFN 2048, 4 feature levels, mask-enhanced box init.",
    ),
    ModelZooEntry(
        name="maskdino_r50_coco_instance_seg_50ep_hid1024",
        task="instance",
        dataset="COCO 2017",
        backbone="R50",
        filename="maskdino_r50_50ep_300q_hid1024_3sd1_instance_maskenhanced_mask46.1ap_box51.5ap.pth",
        metrics={"segm/AP": 46.1, "bbox/AP": 51.5},
        params_m=43.8,
        notes="Encoder FFN 1024, 3 feature levels. The README says 47M parameters; the 3-level "
        "model has 43.8M.",
    ),
    ModelZooEntry(
        name="maskdino_r50_coco_panoptic_seg_50ep",
        task="panoptic",
        dataset="COCO 2017 panoptic",
        backbone="R50",
        filename="maskdino_r50_50ep_300q_hid2048_3sd1_panoptic_pq53.0.pth",
        metrics={"panoptic_seg/PQ": 53.0, "sem_seg/mIoU": 60.6},
        params_m=52.1,
        notes="The README also lists mask AP 48.8 / box AP 44.3; an independent port measured "
        "box AP 48.8 / mask AP 44.4 on this file, so those two README columns are probably swapped.",
    ),
    ModelZooEntry(
        name="maskdino_r50_ade20k_semantic_seg_160k",
        task="semantic",
        dataset="ADE20K",
        backbone="R50",
        filename="maskdino_r50_50ep_100q_celoss_hid1024_3s_semantic_ade20k_48.7miou.pth",
        metrics={"sem_seg/mIoU": 48.7},
    ),
    ModelZooEntry(
        name="maskdino_r50_cityscapes_semantic_seg_90k",
        task="semantic",
        dataset="Cityscapes",
        backbone="R50",
        filename="maskdino_r50_50ep_100q_celoss_hid1024_3s_semantic_cityscapes_79.8miou.pth",
        metrics={"sem_seg/mIoU": 79.8},
    ),
    ModelZooEntry(
        name="maskdino_swinl_coco_instance_seg_50ep",
        task="instance",
        dataset="COCO 2017",
        backbone="Swin-L",
        filename="maskdino_swinl_50ep_300q_hid2048_3sd1_instance_maskenhanced_mask52.3ap_box59.0ap.pth",
        metrics={"segm/AP": 52.3, "bbox/AP": 59.0},
        params_m=222.8,
        notes="Mask-enhanced box init.",
    ),
    ModelZooEntry(
        name="maskdino_swinl_coco_instance_seg_50ep_no_mask_enhance",
        task="instance",
        dataset="COCO 2017",
        backbone="Swin-L",
        filename="maskdino_swinl_50ep_300q_hid2048_3sd1_instance_mask52.1ap_box58.3ap.pth",
        metrics={"segm/AP": 52.1, "bbox/AP": 58.3},
        params_m=222.8,
        notes="Trained without mask-enhanced box init.",
    ),
    ModelZooEntry(
        name="maskdino_swinl_coco_panoptic_seg_50ep",
        task="panoptic",
        dataset="COCO 2017 panoptic",
        backbone="Swin-L",
        filename="maskdino_swinl_50ep_300q_hid2048_3sd1_panoptic_58.3pq.pth",
        metrics={"panoptic_seg/PQ": 58.3, "segm/AP": 50.6, "bbox/AP": 56.2, "sem_seg/mIoU": 67.5},
    ),
]

MODEL_ZOO: dict[str, ModelZooEntry] = {entry.name: entry for entry in _ENTRIES}


def normalize_name(name: str) -> str:
    """Accept ``name``, ``name.py`` or ``maskdino/name.py`` and return the bare model name."""
    name = name.strip()
    if name.endswith(".py"):
        name = name[: -len(".py")]
    return name.rsplit("/", 1)[-1]


def get_entry(name: str) -> ModelZooEntry:
    """The table entry for ``name``; a ``KeyError`` that suggests the closest names otherwise."""
    key = normalize_name(name)
    if key in MODEL_ZOO:
        return MODEL_ZOO[key]
    close = difflib.get_close_matches(key, list(MODEL_ZOO), n=3, cutoff=0.5)
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    raise KeyError(
        f"{name!r} is not a released model.{hint} Run `python tools/model_zoo.py list` to see all "
        f"{len(MODEL_ZOO)} names."
    )


def list_models(task: str | None = None) -> list[str]:
    """Names of the released models, optionally only those of one task."""
    return [e.name for e in _ENTRIES if task is None or e.task == task]


MIRROR_ENV = "DETREX_ZOO_MIRROR"


def get_checkpoint_url(name: str) -> str:
    """Where the checkpoint of ``name`` is fetched from (the release URL unless a mirror is set)."""
    entry = get_entry(name)
    mirror = os.environ.get(MIRROR_ENV, "").strip()
    if not mirror:
        return entry.url
    if is_url(mirror):
        return f"{mirror.rstrip('/')}/{entry.filename}"
    return str(Path(mirror).expanduser() / entry.filename)


def get_checkpoint(
    name: str, *, progress: bool = True, offline: bool | None = None, **download_kwargs: Any
) -> Path:
    """Local path of the verified checkpoint of ``name``, downloading it into the cache if needed.

    ``download_kwargs`` go to :func:`~detrex_ext.checkpoint.download.cached_download`
    (``cache_dir``, ``timeout``, ``max_attempts``, ``retry_wait_s``).
    """
    entry = get_entry(name)
    location = get_checkpoint_url(name)
    if not is_url(location):
        return resolve_local_file(location, entry.sha256)
    sha256 = entry.sha256
    cache_dir = download_kwargs.get("cache_dir")
    cached = Path(cache_dir).expanduser() if cache_dir else get_cache_dir() / "checkpoints"
    first_download = not (cached / entry.filename).exists()
    if sha256 is None and location != entry.url and first_download:
        if not (is_offline() if offline is None else offline):
            sha256 = _mirror_sha256(location)
    return cached_download(
        location,
        entry.filename,
        sha256=sha256,
        offline=offline,
        progress=progress,
        **download_kwargs,
    )


def _mirror_sha256(url: str) -> str | None:
    """The digest a mirror publishes as ``<url>.sha256``, or None when it has none."""
    request = urllib.request.Request(url + ".sha256", headers={"User-Agent": "detrex_ext"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 (http only)
            words = response.read(4096).decode("ascii", errors="replace").split()
    except (OSError, ValueError):  # no record there (404), or the mirror is unreachable
        return None
    if words and re.fullmatch(r"[0-9a-fA-F]{64}", words[0]):
        logger.info(f"{url}: sha256 {words[0].lower()} from the mirror's record")
        return words[0].lower()
    return None
