"""bloodseg: semantic segmentation of peripheral blood smears (SegNet-VGG16 and baselines).

The ``python -m bloodseg.X`` commands sit at the top of the package; the library lives in
subpackages by job (data, models, metrics, tracking, viz, evaluation, sweeps, training, inference,
html_report). The README's Development section has the table.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("bloodseg")
except PackageNotFoundError:  # a source tree that is not installed
    __version__ = "0+unknown"
