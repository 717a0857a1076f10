"""Segmentation metrics with MATLAB evaluateSemanticSegmentation semantics, plus Dice beside them."""
