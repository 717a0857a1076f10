"""Multirun sweeps: reading every job's results, seed aggregation, one GPU per parallel job, the end-of-sweep
summary and the sweep figures.

May import: errors, constants, config, extras, cli, data, models, metrics, tracking, viz, evaluation.
"""
