"""The frozen ImageNet encoder: image decoding, the backbone and its augmentation."""
