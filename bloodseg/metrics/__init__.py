"""Segmentation metrics with MATLAB ``evaluateSemanticSegmentation`` semantics, plus Dice beside them.

``boundary`` (the BF score of one image and class), ``confusion`` (per-image confusion counts; the running confusion matrix behind the training curves),
``semantics`` (MATLAB's two rule sets and the metrics they define), ``suite`` (all metrics of a
split behind one update/compute) and ``tables`` (the metrics.json record, the paper's Tables 1 and 2).

Pure computations; may import errors, constants, config; never data, training or viz.
"""
