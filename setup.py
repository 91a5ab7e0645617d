"""Package layout (everything else is in pyproject.toml).

Two source folders install under other import names, which pyproject's package finder cannot
express:

- ``projects/`` installs as ``detrex_projects`` (``projects/maskdino`` -> ``detrex_projects.maskdino``),
  so it never collides with the ``projects`` namespace that detrex and detectron2 checkouts put
  on ``sys.path``;
- ``configs/`` installs as ``detrex_ext.config.configs``, where ``get_config("common/...")`` finds
  it in editable and regular installs alike.

Config folders have no ``__init__.py``; as namespace packages every config file ships.
"""

from setuptools import find_namespace_packages, find_packages, setup

PACKAGE_DIRS = {"detrex_projects": "projects", "detrex_ext.config.configs": "configs"}


def _mapped(name: str, folder: str) -> list[str]:
    return [name] + [f"{name}.{sub}" for sub in find_namespace_packages(folder)]


packages = find_packages(include=["detrex_ext", "detrex_ext.*"])
for package, folder in PACKAGE_DIRS.items():
    packages += _mapped(package, folder)

setup(packages=packages, package_dir=PACKAGE_DIRS)
