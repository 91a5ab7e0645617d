"""LazyConfig.load: Python configs with relative imports between them, keys, YAML, errors."""

from __future__ import annotations

import builtins
from pathlib import Path

import pytest
import torch
from omegaconf import DictConfig, ListConfig

from detrex_ext.config import LazyConfig, instantiate

FIXTURES = Path(__file__).resolve().parent / "fixtures"


def test_relative_imports_compose_and_edit():
    cfg = LazyConfig.load(FIXTURES / "experiment" / "exp.py")
    assert isinstance(cfg, DictConfig)
    assert set(cfg.keys()) == {"train", "model", "dims"}
    assert cfg.train.max_iter == 500 and cfg.train.output_dir == "./out"
    assert cfg.model._target_ is torch.nn.Linear
    linear = instantiate(cfg.model)
    # in_features edited by exp.py; out_features follows the edited dims through ${..dims.out}
    assert (linear.in_features, linear.out_features) == (8, 5)


def test_imported_files_are_executed_again_each_time():
    cfg = LazyConfig.load(FIXTURES / "experiment" / "reimport.py")
    assert cfg.train_a.max_iter == 1
    assert cfg.train_b.max_iter == 100
    # ...and an edit made by one config never leaks into a later load of the base file
    LazyConfig.load(FIXTURES / "experiment" / "exp.py")
    assert LazyConfig.load(FIXTURES / "base" / "train.py").train.max_iter == 100


def test_three_level_relative_import():
    cfg = LazyConfig.load(FIXTURES / "experiment" / "deep" / "deep.py")
    assert cfg.train.output_dir == "./deep"
    assert cfg.train.max_iter == 100


def test_only_public_dict_like_top_level_names_are_kept():
    cfg = LazyConfig.load(FIXTURES / "base" / "train.py")
    assert set(cfg.keys()) == {"train", "listcfg"}
    assert isinstance(cfg.train, DictConfig) and isinstance(cfg.listcfg, ListConfig)
    assert cfg.train.nested.a == 1


def test_star_import_brings_every_public_name():
    cfg = LazyConfig.load(FIXTURES / "experiment" / "star.py")
    assert set(cfg.keys()) == {"train", "listcfg"}


def test_keys_select_values_of_any_type():
    path = FIXTURES / "base" / "train.py"
    assert LazyConfig.load(path, keys="image_size") == 1024
    assert LazyConfig.load(path, keys="sizes") == [1, 2]
    size, train = LazyConfig.load(path, keys=("image_size", "train"))
    assert size == 1024 and isinstance(train, DictConfig) and train.max_iter == 100
    with pytest.raises(KeyError) as e:
        LazyConfig.load(path, keys="trian")
    assert e.value.args[0] == (
        f"{path} has no top-level name 'trian'; it defines: image_size, listcfg, sizes, train"
    )


def test_load_rel_resolves_against_the_calling_file():
    cfg = LazyConfig.load(FIXTURES / "experiment" / "rel.py")
    assert cfg.train.max_iter == 100
    assert cfg.both == {"size": 1024, "max_iter": 100}


def test_import_hook_is_removed_after_loading():
    original = builtins.__import__
    LazyConfig.load(FIXTURES / "experiment" / "exp.py")
    assert builtins.__import__ is original
    with pytest.raises(ImportError):
        LazyConfig.load(FIXTURES / "bad" / "missing.py")
    assert builtins.__import__ is original


def _rel_error(importer: Path, statement: str, problem: str) -> str:
    return (
        f"config file {importer}: '{statement}' {problem}. Relative imports in config files load "
        "other config files only (write 'from .file import name' for ./file.py); import library "
        "and model code absolutely, e.g. 'from detrex_projects.maskdino.modeling import MaskDINO'"
    )


@pytest.mark.parametrize(
    "name, statement, problem",
    [
        (
            "directory.py",
            "from ..base import ...",
            f"points to the directory {FIXTURES / 'base'}, not a config file",
        ),
        (
            "missing.py",
            "from .nothere import ...",
            f"needs {FIXTURES / 'bad' / 'nothere.py'}, which does not exist",
        ),
        ("dot_only.py", "from . import ...", "names no file (use 'from .file import name')"),
        (
            "model_code.py",
            "from ...modeling.meta_arch import ...",
            f"needs {FIXTURES.parent / 'modeling' / 'meta_arch.py'}, which does not exist",
        ),
    ],
)
def test_bad_relative_imports_explain_the_rule(name, statement, problem):
    importer = FIXTURES / "bad" / name
    with pytest.raises(ImportError) as e:
        LazyConfig.load(importer)
    assert str(e.value) == _rel_error(importer, statement, problem)


def test_importing_a_name_the_file_does_not_define():
    importer = FIXTURES / "bad" / "wrong_name.py"
    with pytest.raises(ImportError) as e:
        LazyConfig.load(importer)
    assert str(e.value) == (
        f"config file {importer}: cannot import name 'nothere' from {FIXTURES / 'base' / 'train.py'}; "
        "it defines: image_size, listcfg, sizes, train"
    )


def test_file_type_and_existence_errors(tmp_path):
    (tmp_path / "cfg.json").write_text("{}")
    with pytest.raises(
        ValueError, match=r"cannot load config .*cfg\.json: expected a \.py, \.yaml or \.yml file"
    ):
        LazyConfig.load(tmp_path / "cfg.json")
    with pytest.raises(FileNotFoundError, match=r"config file .*absent\.py does not exist"):
        LazyConfig.load(tmp_path / "absent.py")


def test_syntax_error_names_file_and_line(tmp_path):
    path = tmp_path / "broken.py"
    path.write_text("train = dict(\n  a=1,,\n)\n")
    with pytest.raises(SyntaxError) as e:
        LazyConfig.load(path)
    assert e.value.filename == str(path) and e.value.lineno == 2


def test_yaml_config_loads_plain_data_and_import_paths(tmp_path):
    path = tmp_path / "cfg.yaml"
    path.write_text(
        "model:\n  _target_: torch.nn.Linear\n  in_features: 2\n  out_features: '${..n}'\n"
        "n: 3\nact: !!python/name:torch.nn.ReLU ''\npair: !!python/tuple [1, 2]\n"
    )
    cfg = LazyConfig.load(path)
    assert cfg.model._target_ == "torch.nn.Linear"
    assert cfg.act is torch.nn.ReLU and list(cfg.pair) == [1, 2]
    assert instantiate(cfg.model).out_features == 3
    assert LazyConfig.load(path, keys="n") == 3


def test_yaml_with_python_objects_is_refused(tmp_path):
    path = tmp_path / "unsafe.yaml"
    path.write_text("a: !!python/object/apply:os.system ['echo hacked']\n")
    with pytest.raises(
        ValueError, match=r"Only plain data and '!!python/name:' import paths are read"
    ):
        LazyConfig.load(path)


def test_yaml_must_hold_a_mapping(tmp_path):
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(ValueError, match=r"a config file must hold a mapping, got list"):
        LazyConfig.load(tmp_path / "list.yaml")
    (tmp_path / "empty.yml").write_text("")
    assert LazyConfig.load(tmp_path / "empty.yml") == {}
