"""The wheel ships configs/ (as detrex_ext/config/configs) and every projects/*/configs/ (as
detrex_projects/*/configs), installs no top-level ``projects`` package, and get_config works
from it.

The wheel is built from a copy of the source tree (setuptools' PEP 517 backend, no network, no
build isolation), unpacked like a regular install, and used from a fresh interpreter whose
``detrex_ext`` comes from the unpacked wheel rather than the editable source tree.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
_COPIED = ["pyproject.toml", "setup.py", "README.md", "detrex_ext", "projects", "configs"]


def _source_config_files() -> list[str]:
    """Wheel paths that the config files of the source tree must have."""
    expected = [
        f"detrex_ext/config/configs/{p.relative_to(REPO / 'configs').as_posix()}"
        for p in (REPO / "configs").rglob("*.py")
    ]
    for project_configs in (REPO / "projects").glob("*/configs"):
        expected += [
            "detrex_projects/" + p.relative_to(REPO / "projects").as_posix()
            for p in project_configs.rglob("*.py")
        ]
    return [p for p in expected if "__pycache__" not in p]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    # The build backend of pyproject.toml; venvs of Python >= 3.12 do not ship it by default.
    pytest.importorskip("setuptools", reason="setuptools (the build backend) is not installed")
    work = tmp_path_factory.mktemp("wheel")
    src = work / "src"
    src.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", "build")
    for name in _COPIED:
        path = REPO / name
        if path.is_dir():
            shutil.copytree(path, src / name, symlinks=True, ignore=ignore)
        else:
            shutil.copy2(path, src / name)
    out = work / "dist"
    code = f"from setuptools import build_meta; print(build_meta.build_wheel({str(out)!r}))"
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=src, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return out / result.stdout.strip().splitlines()[-1]


def test_wheel_contains_every_config_file(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = _source_config_files()
    assert "detrex_ext/config/configs/common/train.py" in expected
    missing = [p for p in expected if p not in names]
    assert not missing, f"config files missing from the wheel: {missing}"
    assert not any(n.startswith(("tests/", "configs/", "projects/")) for n in names)
    # the model code installs under its own name, never as detrex's `projects` namespace
    assert "detrex_projects/maskdino/modeling/meta_arch.py" in names


def test_get_config_works_from_a_regular_install(wheel, tmp_path):
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    code = (
        "import json, detrex_ext\n"
        "from detrex_ext.config import get_config, get_config_file, list_configs\n"
        "cfg = get_config('common/train.py')\n"
        "print(json.dumps({'module': detrex_ext.__file__, 'file': str(get_config_file('common/train.py')),"
        " 'max_iter': cfg.train.max_iter, 'configs': list_configs()}))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(site)}
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    info = json.loads(result.stdout.strip().splitlines()[-1])
    assert info["module"].startswith(str(site))
    assert info["file"] == str(site / "detrex_ext" / "config" / "configs" / "common" / "train.py")
    assert info["max_iter"] == 90000
    assert "common/optim.py" in info["configs"]
    project_configs = [
        n for n in _source_config_files() if n.startswith("detrex_projects/") and "/_" not in n
    ]
    for name in project_configs:
        project, _, rest = name[len("detrex_projects/") :].partition("/configs/")
        assert f"{project}/{rest}" in info["configs"]
