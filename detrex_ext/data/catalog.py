"""``DatasetCatalog`` (name -> function returning dataset dicts) and ``MetadataCatalog``.

Nothing is registered on import. Built-in names (``coco_2017_train``, ``ade20k_sem_seg_val``,
``synthetic_shapes_train``...) are registered on first use under the data root
``$DETREX_DATASETS`` (default ``./datasets``); other names come from explicit calls such as
``register_coco_instances``.
"""

from __future__ import annotations

import contextlib
import copy
import difflib
import logging
import types
from collections import UserDict
from dataclasses import dataclass
from typing import Any, Callable, Iterator

logger = logging.getLogger(__name__)

# the metadata keys that define what a class id means; changing them under an existing name
# would silently relabel data, so registration refuses it
CLASS_KEYS = ("thing_classes", "stuff_classes")


@dataclass(frozen=True)
class LazyDatasets:
    """A family of dataset names registered on first use (the built-in datasets register
    themselves as one when :mod:`detrex_ext.data.datasets.builtin` is imported)."""

    owns: Callable[[str], bool]  # is this name one of the family?
    register: Callable[[str], None]  # register this name (data and metadata)
    names: Callable[[], list[str]]  # every name of the family (for error messages)


_lazy_families: list[LazyDatasets] = []


def add_lazy_datasets(family: LazyDatasets) -> None:
    """Let the catalogs register ``family``'s names when they are first asked for."""
    if family not in _lazy_families:
        _lazy_families.append(family)


def _lazy_family(name: str) -> LazyDatasets | None:
    return next((family for family in _lazy_families if family.owns(name)), None)


def _lazy_names() -> list[str]:
    return [name for family in _lazy_families for name in family.names()]


def _ensure_builtin(name: str) -> None:
    """Register ``name`` now if it is a built-in (lazily registered) dataset not registered yet."""
    if name not in DatasetCatalog.data:
        family = _lazy_family(name)
        if family is not None:
            family.register(name)


class _Catalog(UserDict):
    """A global ``name -> entry`` table."""

    _what = "entries"

    def list(self) -> list[str]:
        return list(self.data.keys())

    def remove(self, name: str) -> None:
        self.data.pop(name)

    def __str__(self) -> str:
        return f"{type(self).__name__.lstrip('_')}(registered {self._what}: {', '.join(self.data)})"

    __repr__ = __str__


class _DatasetCatalog(_Catalog):
    """Global ``name -> function()`` table; ``get(name)`` calls the function.

    The function returns ``list[dict]`` in detectron2's dataset-dict format and may be called
    several times (it should be cheap or cache itself).
    """

    _what = "datasets"

    def register(self, name: str, func: Callable[[], list[dict]]) -> None:
        """Register ``func`` under ``name``; re-registering a name replaces it with a warning.

        Use the registration helpers (``register_coco_instances``...) rather than this for
        data with classes: they also refuse to change the classes of an existing name.
        """
        if not callable(func):
            raise TypeError("DatasetCatalog.register needs a function returning list[dict]")
        if name in self.data:
            logger.warning("Dataset %r was already registered; replacing it", name)
        self.data[name] = func

    def get(self, name: str) -> list[dict]:  # type: ignore[override]
        """Call the function registered under ``name`` and return its dataset dicts."""
        _ensure_builtin(name)
        try:
            func = self.data[name]
        except KeyError:
            raise KeyError(_unknown_name_message(name, list(self.data))) from None
        return func()


class Metadata(types.SimpleNamespace):
    """Metadata of one dataset: ``thing_classes``, ``stuff_classes``, id maps, paths...

    Attributes cannot be changed to a different value once set (that would silently change
    what a class id means); ``MetadataCatalog.remove(name)`` starts over. Some attributes may be
    computed lazily on first access (e.g. the classes of a COCO json, read when needed).
    """

    name: str = "N/A"

    def __getattr__(self, key: str) -> Any:
        # only called when normal lookup fails
        lazy = self.__dict__.get("_lazy")
        if lazy is not None and key in lazy[0]:
            keys, loader = lazy
            del self.__dict__["_lazy"]
            for k, v in loader().items():
                if k not in self.__dict__:
                    super().__setattr__(k, v)
            if key in self.__dict__:
                return self.__dict__[key]
        available = [k for k in self.__dict__ if not k.startswith("_") and k != "name"]
        if lazy is not None:
            available += list(lazy[0])
        hint = f"Available keys are {sorted(available)}." if available else "Metadata is empty."
        raise AttributeError(
            f"Attribute '{key}' does not exist in the metadata of dataset '{self.name}'. {hint}"
        )

    def __setattr__(self, key: str, value: Any) -> None:
        if key.startswith("_"):
            super().__setattr__(key, value)
            return
        try:
            old = getattr(self, key)
        except AttributeError:
            super().__setattr__(key, value)
            return
        if old != value:
            raise ValueError(
                f"Attribute '{key}' in the metadata of dataset '{self.name}' cannot be set to a "
                f"different value ({_short(old)} != {_short(value)}). Register your data under "
                f"a new name, or call MetadataCatalog.remove({self.name!r}) and "
                f"DatasetCatalog.remove({self.name!r}) first."
            )

    def set_lazy(self, keys: tuple[str, ...], loader: Callable[[], dict[str, Any]]) -> Metadata:
        """Compute ``keys`` with ``loader()`` (returns a dict) when one of them is first read."""
        self.__dict__["_lazy"] = (tuple(keys), loader)
        return self

    def as_dict(self) -> dict[str, Any]:
        """A shallow copy of the set attributes (lazy ones are computed first)."""
        lazy = self.__dict__.get("_lazy")
        if lazy is not None:
            getattr(self, lazy[0][0], None)
        return {k: copy.copy(v) for k, v in self.__dict__.items() if not k.startswith("_")}

    def set(self, **kwargs: Any) -> Metadata:
        for key, value in kwargs.items():
            setattr(self, key, value)
        return self

    def get(self, key: str, default: Any = None) -> Any:
        try:
            return getattr(self, key)
        except AttributeError:
            return default


class _MetadataCatalog(_Catalog):
    """Global ``name -> Metadata`` table; ``get`` creates an empty Metadata for a new name."""

    _what = "metadata"

    def get(self, name: str) -> Metadata:  # type: ignore[override]
        if not name:
            raise ValueError("dataset name must be a non-empty string")
        _ensure_builtin(name)
        meta = self.data.get(name)
        if meta is None:
            meta = self.data[name] = Metadata(name=name)
        return meta


DatasetCatalog = _DatasetCatalog()
MetadataCatalog = _MetadataCatalog()


@contextlib.contextmanager
def catalog_snapshot() -> Iterator[None]:
    """Restore both catalogs to their current content when the block exits (tests, notebooks:
    registrations made inside do not leak)."""
    datasets, metadata = dict(DatasetCatalog.data), dict(MetadataCatalog.data)
    try:
        yield
    finally:
        DatasetCatalog.data.clear()
        DatasetCatalog.data.update(datasets)
        MetadataCatalog.data.clear()
        MetadataCatalog.data.update(metadata)


_registering_builtin = False


@contextlib.contextmanager
def builtin_registration() -> Iterator[None]:
    """Inside this block, registrations are the built-in ones (no class-conflict check)."""
    global _registering_builtin
    previous, _registering_builtin = _registering_builtin, True
    try:
        yield
    finally:
        _registering_builtin = previous


def register_dataset(
    name: str,
    func: Callable[[], list[dict]],
    metadata: dict[str, Any],
    lazy_metadata: tuple[tuple[str, ...], Callable[[], dict[str, Any]]] | None = None,
) -> None:
    """Register a dataset and its metadata in one step, safely.

    Registering a name again with the same classes replaces the old entry (e.g. a new data
    root). Registering it with different classes is refused: the classes define what every
    class id means, and built-in names have fixed classes.

    Args:
        name: dataset name.
        func: returns the dataset dicts.
        metadata: metadata fields (``thing_classes``, ``json_file``...).
        lazy_metadata: optional ``(keys, loader)`` computing some fields on first access.
    """
    if not _registering_builtin:
        check_classes_compatible(name, {k: metadata[k] for k in CLASS_KEYS if k in metadata})
    if name in DatasetCatalog.data:
        logger.info("Re-registering dataset %r", name)
    DatasetCatalog.data[name] = func
    meta = MetadataCatalog.data[name] = Metadata(name=name)
    meta.set(**metadata)
    if lazy_metadata is not None:
        meta.set_lazy(*lazy_metadata)


def check_classes_compatible(name: str, classes: dict[str, list[str]]) -> None:
    """Refuse to give ``name`` other classes than it already has (registered or built-in).

    Args:
        name: dataset name about to be registered.
        classes: ``{"thing_classes": [...], "stuff_classes": [...]}`` (either key optional).
    """
    if name not in MetadataCatalog.data and _lazy_family(name) is None:
        return
    old_meta = MetadataCatalog.get(name)  # registers the built-in version if needed
    for key, new in classes.items():
        old = old_meta.get(key)
        if old is not None and list(old) != list(new):
            raise ValueError(_class_conflict_message(name, key, old, new))


def _class_conflict_message(name: str, key: str, old: Any, new: Any) -> str:
    where = "a built-in dataset" if _lazy_family(name) is not None else "already registered"
    return (
        f"Dataset name {name!r} is {where} with {key}={_short(old)}; registering it with "
        f"{key}={_short(new)} would change what its class ids mean. Pick a new name for your "
        f"dataset, e.g. 'my_{name}'."
    )


def _unknown_name_message(name: str, known: list[str]) -> str:
    builtin = _lazy_names()
    candidates = sorted(set(known) | set(builtin))
    close = difflib.get_close_matches(name, candidates, n=3)
    hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
    return (
        f"Dataset {name!r} is not registered.{hint} Register it first, e.g. with "
        "register_coco_instances(name, {}, json_file, image_root); registered: "
        f"{', '.join(known) or 'none'}; built-in: {', '.join(builtin)}."
    )


def _short(value: Any, limit: int = 120) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
