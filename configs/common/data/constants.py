"""Pixel normalisation constants (0-255 scale) for ImageNet-pretrained backbones."""

constants = dict(
    imagenet_rgb256_mean=[123.675, 116.280, 103.530],
    imagenet_rgb256_std=[58.395, 57.120, 57.375],
    imagenet_bgr256_mean=[103.530, 116.280, 123.675],
    # MSRA / Detectron1 Caffe weights absorbed the std into conv1: use 1.0 with them
    imagenet_bgr256_std=[1.0, 1.0, 1.0],
)
