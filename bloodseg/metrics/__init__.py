"""Segmentation metrics with MATLAB evaluateSemanticSegmentation semantics (GUIDE section 4)."""
