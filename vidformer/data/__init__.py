"""Video data: decoders, datasets, clip sampling, transforms, mixup/cutmix and a synthetic dataset generator."""
