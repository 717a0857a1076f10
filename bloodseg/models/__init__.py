"""Segmentation networks: the paper's SegNet and segmentation-models-pytorch baselines."""
