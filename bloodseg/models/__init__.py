"""Segmentation networks: the paper's SegNet and segmentation-models-pytorch baselines.

Checkpoints store these modules' paths (``bloodseg.models.segnet.SegNet``, ``bloodseg.models.baselines.build_smp``):
they do not move. May import: errors, constants, config; never data or training.
"""
