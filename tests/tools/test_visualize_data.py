"""tools/visualize_data.py on the synthetic shapes dataset of the tiny config."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from tool_helpers import TINY_CONFIG, load_tool

from detrex_ext.config import LazyConfig, instantiate

visualize_data = load_tool("visualize_data")
# pycocotools' mask decoding warns once per polygon under numpy 2 (not ours to fix)
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:pycocotools.*")


def _first_training_samples(count: int) -> list[dict]:
    cfg = LazyConfig.load(str(TINY_CONFIG))
    samples = []
    for batch in instantiate(cfg.dataloader.train):
        samples.extend(batch)
        if len(samples) >= count:
            return samples[:count]
    return samples


def test_draws_augmented_training_samples_with_ground_truth(tmp_path):
    assert (
        visualize_data.main(
            ["--config-file", str(TINY_CONFIG), "--output", str(tmp_path), "--num-images", "3"]
        )
        == 0
    )
    files = sorted(tmp_path.glob("*.png"))
    assert [f.name[:5] for f in files] == ["0000_", "0001_", "0002_"]
    # the loader is seeded: the same samples come out again, so the drawing can be checked
    for path, sample in zip(files, _first_training_samples(3)):
        drawn = np.asarray(Image.open(path).convert("RGB"))
        original = sample["image"].permute(1, 2, 0).numpy()
        assert drawn.shape == original.shape
        masks = sample["instances"].gt_masks.tensor.numpy()
        assert len(masks) > 0
        for mask in masks:
            # inside each ground-truth mask the pixels are painted over
            assert (np.abs(drawn[mask].astype(int) - original[mask]).sum(-1) > 0).mean() > 0.9


def test_annotation_source_draws_unmapped_records(tmp_path):
    argv = ["--config-file", str(TINY_CONFIG), "--source", "annotation", "--output", str(tmp_path)]
    assert visualize_data.main(argv + ["--num-images", "2"]) == 0
    files = sorted(tmp_path.glob("*.png"))
    assert len(files) == 2
    assert np.asarray(Image.open(files[0])).shape == (128, 128, 3)  # the dataset's image size
