"""Cityscapes semantic segmentation on the 19 train ids (Mask DINO / Mask2Former recipe).

The ADE20K recipe with: shortest edge chosen from 512..2048 (max 4096), 512x1024 crop, no padding
in the mapper; test shortest edge 1024, max 2048. Evaluation: mIoU (SemSegEvaluator).
"""

from .ade20k_semantic import dataloader

dataloader.train.dataset.names = "cityscapes_fine_sem_seg_train"
dataloader.train.mapper.size_divisibility = 0
dataloader.train.mapper.min_size_train = [int(x * 0.1 * 1024) for x in range(5, 21)]
dataloader.train.mapper.max_size_train = 4096
dataloader.train.mapper.crop_size = [512, 1024]

dataloader.test.dataset.names = "cityscapes_fine_sem_seg_val"
dataloader.test.mapper.augmentations[0].short_edge_length = 1024
dataloader.test.mapper.augmentations[0].max_size = 2048
