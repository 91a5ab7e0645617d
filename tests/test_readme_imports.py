"""The README's import table ("Coming from detectron2/detrex"): every right-hand import runs, and
binds every name of its detectron2/detrex counterpart."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def _rows() -> list[tuple[str, str]]:
    text = README.read_text().split("<!-- imports:table -->", 1)[1]
    rows = []
    for line in text.splitlines()[3:]:
        if not line.startswith("|"):
            break
        theirs, ours = line.strip().strip("|").split(" | ")
        rows.append((theirs, ours))
    return rows


def _imported_names(statement: str) -> list[str]:
    """Names a ``from X import a, b as c`` / ``import x.y as z`` statement binds."""
    if statement.startswith("from "):
        names = statement.split(" import ", 1)[1].split(",")
        return [n.split(" as ")[-1].strip() for n in names]
    return [statement.split(" as ")[-1].strip().split(".")[0]]


def test_the_table_covers_the_names_of_the_issue():
    text = " ".join(theirs for theirs, _ in _rows())
    for name in ["SimpleTrainer", "AMPTrainer", "BestCheckpointer", "has_event_storage",
                 "RandomApply", "ColorTransform", "PILColorTransform", "ExtentTransform",
                 "ScaleTransform", "gen_crop_transform_with_instance", "GroupedBatchSampler",
                 "RepeatFactorTrainingSampler", "ToIterableDataset", "build_batch_data_loader",
                 "ciou_loss", "diou_loss", "PositionEmbeddingLearned", "FocalLoss",
                 "CrossEntropyLoss", "L1Loss", "GIoULoss", "FFN", "MultiheadAttention",
                 "BaseTransformerLayer", "TransformerLayerSequence", "ColorMode",
                 "WeightedCriterion", "coco_instance_transform_gen",
                 "maskformer_semantic_transform_gen", "make_default_stages"]:  # fmt: skip
        assert name in text, name


@pytest.mark.parametrize("theirs, ours", _rows(), ids=lambda cell: cell[:60])
def test_our_import_runs_and_binds_their_names(theirs, ours):
    namespace: dict = {}
    statements = [s for s in re.findall(r"`([^`]+)`", ours) if s.startswith(("from ", "import "))]
    assert statements, ours
    for statement in statements:
        exec(statement, namespace)  # noqa: S102 - the README's own import lines
    for span in re.findall(r"`([^`]+)`", theirs):
        if span.startswith(("from ", "import ")):
            for name in _imported_names(span):
                assert name in namespace, (name, ours)
        elif re.fullmatch(r"\w+\.\w+", span):  # an attribute, e.g. ResNet.make_default_stages
            owner, attribute = span.split(".")
            assert hasattr(namespace[owner], attribute), span
    # the methods and attributes the issue names
    if "EventStorage" in namespace:
        assert hasattr(namespace["EventStorage"], "step")
        assert hasattr(namespace["EventStorage"], "count_samples")
    if "Visualizer" in namespace:
        for method in ("draw_instance_predictions", "overlay_instances", "draw_binary_mask",
                       "draw_soft_mask", "draw_dataset_dict", "output"):  # fmt: skip
            assert hasattr(namespace["Visualizer"], method), method
    if "RepeatFactorTrainingSampler" in namespace:
        assert hasattr(
            namespace["RepeatFactorTrainingSampler"], "repeat_factors_from_category_frequency"
        )
