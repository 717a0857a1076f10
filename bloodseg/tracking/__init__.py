"""Experiment tracking: the CSV metrics log (written and read back), the W&B run (offline unless
configured, never fatal) and its naming, and the end-of-run console summary.

May import: errors, constants, config, extras, cli, data, models, metrics.
"""
