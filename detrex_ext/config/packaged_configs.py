"""Find the config files shipped with the package: ``get_config("common/train.py")``.

Two trees are served:

- ``configs/`` at the repository root (shared pieces: ``common/train.py``, ``common/optim.py``,
  ``common/coco_schedule.py``, ``common/data/...``). It installs as the package
  ``detrex_ext.config.configs`` (a ``package_dir`` mapping in ``setup.py``; no link inside the
  source tree), so the same lookup works for editable and regular installs, and a copy of
  ``detrex_ext`` placed in another repository never reads that repository's ``configs/``.
- ``projects/<project>/configs/`` for every project, named ``"<project>/<file>"``:
  ``get_config("maskdino/maskdino_r50_coco_instance_seg_50ep.py")`` loads
  ``projects/maskdino/configs/maskdino_r50_coco_instance_seg_50ep.py``. ``projects/`` installs
  as the package ``detrex_projects`` (not ``projects``, the namespace that detrex and detectron2
  checkouts put on ``sys.path``).

Files are located with ``importlib.util.find_spec`` (no ``pkg_resources``); nothing is imported.
"""

from __future__ import annotations

import difflib
import importlib.util
from pathlib import Path, PurePosixPath
from typing import Any

from omegaconf import OmegaConf

from .config_loader import load_config_file

__all__ = ["get_config", "get_config_file", "list_configs", "try_get_key"]

_CONFIG_SUFFIXES = (".py", ".yaml", ".yml")


SHARED_CONFIGS_PACKAGE = "detrex_ext.config.configs"
PROJECTS_PACKAGE = "detrex_projects"


def _package_dirs(package: str) -> list[Path]:
    """The folders of an installed (possibly namespace) package; none when it is absent."""
    try:
        spec = importlib.util.find_spec(package)
    except ModuleNotFoundError:  # a parent package is missing
        return []
    if spec is None or not spec.submodule_search_locations:
        return []
    return [Path(location) for location in spec.submodule_search_locations]


def _shared_configs_dirs() -> list[Path]:
    """The folder of the shared configs (``[]`` when they are not installed)."""
    return _package_dirs(SHARED_CONFIGS_PACKAGE)[:1]


def _project_config_dirs() -> dict[str, Path]:
    """``{project name: its configs directory}`` for every installed project."""
    found: dict[str, Path] = {}
    for location in _package_dirs(PROJECTS_PACKAGE):
        for project in sorted(location.iterdir()):
            configs = project / "configs"
            if configs.is_dir() and project.name not in found:
                found[project.name] = configs
    return found


def _config_files(root: Path, prefix: str) -> list[str]:
    names = []
    for path in root.rglob("*"):
        relative = path.relative_to(root)
        if (
            path.is_file()
            and path.suffix in _CONFIG_SUFFIXES
            and not any(part.startswith(("_", ".")) for part in relative.parts)
        ):
            names.append(prefix + relative.as_posix())
    return names


def list_configs() -> list[str]:
    """Names of every shipped config, as accepted by :func:`get_config`, sorted."""
    names = []
    for shared in _shared_configs_dirs():
        names += _config_files(shared, "")
    for project, configs in _project_config_dirs().items():
        names += _config_files(configs, project + "/")
    return sorted(names)


def _missing_config_error(name: str, looked_at: list[Path]) -> FileNotFoundError:
    available = list_configs()
    message = f"no shipped config {name!r} (looked for {', '.join(str(p) for p in looked_at)})."
    close = difflib.get_close_matches(name, available, n=3, cutoff=0.5)
    if close:
        message += " Did you mean: " + ", ".join(repr(c) for c in close) + "?"
    message += " Available configs: " + (", ".join(available) or "(none)")
    if not _shared_configs_dirs():
        message += (
            f". The shared configs (package {SHARED_CONFIGS_PACKAGE!r}, the repository's configs/ "
            "folder) are not installed: run `pip install -e .` (or `pip install .`) in the "
            "repository root"
        )
    return FileNotFoundError(message)


def get_config_file(config_path: str) -> Path:
    """Absolute path of a shipped config file.

    Args:
        config_path: ``"common/<file>.py"`` (repository ``configs/``) or ``"<project>/<file>.py"``
            (``projects/<project>/configs/``); the ``.py`` suffix may be left out.

    Raises:
        FileNotFoundError: no such config; the message lists the closest and all available names.
    """
    relative = PurePosixPath(config_path)
    if relative.is_absolute() or ".." in relative.parts or not relative.parts:
        raise ValueError(
            f"config path {config_path!r} must be relative to the shipped configs, e.g. "
            "'common/train.py' or 'maskdino/maskdino_r50_coco_instance_seg_50ep.py'"
        )
    variants = (
        [relative]
        if relative.suffix in _CONFIG_SUFFIXES
        else [relative, relative.with_name(relative.name + ".py")]
    )
    candidates = []
    for variant in variants:
        candidates += [shared.joinpath(*variant.parts) for shared in _shared_configs_dirs()]
        project_dir = _project_config_dirs().get(variant.parts[0])
        if project_dir is not None and len(variant.parts) > 1:
            candidates.append(project_dir.joinpath(*variant.parts[1:]))
    for candidate in candidates:
        if candidate.is_file():
            return candidate.resolve()
    raise _missing_config_error(config_path, candidates)


def get_config(config_path: str) -> Any:
    """Load a shipped config file (the whole file, as ``LazyConfig.load`` returns it).

    ``get_config("common/train.py").train`` is the default training dict;
    ``get_config("maskdino/maskdino_r50_coco_instance_seg_50ep.py")`` is a full experiment.
    """
    return load_config_file(get_config_file(config_path))


def try_get_key(cfg: Any, *keys: str, default: Any = None) -> Any:
    """The value of the first dotted key that exists in ``cfg`` (``None`` values count), else
    ``default``. Example: ``try_get_key(cfg, "model.device", "train.device", default="cpu")``.
    """
    absent = object()
    for key in keys:
        value = OmegaConf.select(cfg, key, default=absent)
        if value is not absent:
            return value
    return default
