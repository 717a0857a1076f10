"""Datasets: label decoding, image reading, sources (synthetic, folder, CellaVision), the download cache,
splits, augmentation, and the Lightning data module.

May import: errors, constants, config, extras, cli; never metrics, training or anything below.
"""
