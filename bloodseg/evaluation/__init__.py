"""The result files of an evaluation (metrics.json, tables, confusion matrix, per-image scores, overlays)
and scoring folders of predicted label images without a model.

May import: errors, constants, config, extras, cli, data, models, metrics, tracking, viz.
"""
