"""detrex_ext.utils.image_io reads images with PIL and numpy only: importing and using it never
imports torch (the ONNX runtime path relies on that)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
from PIL import Image

from detrex_ext.utils.image_io import load_image_rgb, read_image


def test_reading_an_image_never_imports_torch(tmp_path):
    path = tmp_path / "x.png"
    Image.fromarray(np.full((4, 5, 3), 7, np.uint8)).save(path)
    code = (
        "import json, sys\n"
        "from detrex_ext.utils.image_io import load_image_rgb\n"
        f"a = load_image_rgb({str(path)!r})\n"
        "print(json.dumps({'shape': list(a.shape), 'torch': 'torch' in sys.modules}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.strip().splitlines()[-1]) == {"shape": [4, 5, 3], "torch": False}


def test_gray_and_bgr_conversions(tmp_path):
    path = tmp_path / "g.png"
    Image.fromarray(np.array([[10, 200]], np.uint8), mode="L").save(path)
    assert load_image_rgb(path).tolist() == [[[10, 10, 10], [200, 200, 200]]]
    rgb = tmp_path / "c.png"
    Image.fromarray(np.array([[[1, 2, 3]]], np.uint8)).save(rgb)
    assert read_image(str(rgb), "BGR").tolist() == [[[3, 2, 1]]]
