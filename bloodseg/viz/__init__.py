"""Pictures and figures: overlays and comparisons as arrays (numpy / PIL), matplotlib figures built
outside pyplot (no backend is ever selected), the paper's figures and the training curves.

May import: errors, constants, config, extras, cli, data, models, metrics, tracking.
"""
