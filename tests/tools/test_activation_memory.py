"""tools/activation_memory.py on the demo config at 64 px: the parts that checkpoint keep fewer
bytes, the rest of the model keeps about as many, and the table prints."""

from __future__ import annotations

import torch
from tool_helpers import load_tool

from detrex_ext.engine.predictor import load_config

activation_memory = load_tool("activation_memory")

DEMO = "maskdino/maskdino_demo_synthetic.py"
SMALL = ["model.sem_seg_head.transformer_predictor.dn_num=8", "model.criterion.num_points=64"]


def test_checkpointed_parts_shrink_and_the_rest_is_untouched():
    cfg = load_config(DEMO, SMALL)
    batch = activation_memory.synthetic_training_batch(2, 64, 5, (3, 2))
    off = activation_memory.measure(cfg, batch, torch.device("cpu"), False)
    on = activation_memory.measure(cfg, batch, torch.device("cpu"), True)
    parts = {
        "backbone",
        "sem_seg_head.pixel_decoder.transformer.encoder",
        "sem_seg_head.predictor.decoder",
    }
    assert set(off) == parts | {activation_memory.REST}
    for part in parts:
        assert 0 < on[part] < 0.6 * off[part], part
    # the rest is not checkpointed; it only takes over a few storages that it shares with the
    # checkpointed parts (each storage counts for the first part that saves it)
    rest_off, rest_on = off[activation_memory.REST], on[activation_memory.REST]
    assert rest_off <= rest_on < 1.05 * rest_off


def test_prints_one_row_per_part_and_the_total(capsys):
    assert activation_memory.main(["--config-file", DEMO, "--size", "64", *SMALL]) == 0
    out = capsys.readouterr().out
    assert "batch 2 x 64 px" in out
    total = [line for line in out.splitlines() if line.startswith("total")]
    assert len(total) == 1
    ratio = float(total[0].split()[-1])
    assert 0 < ratio < 1
