"""Data structures with detectron2's API: Instances, Boxes, masks, ImageList."""
