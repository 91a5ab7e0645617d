"""detrex_ext: a detectron2/detrex-compatible toolkit for DETR-style models, installable with pip.

Subpackages mirror detectron2/detrex names so that configs and scripts port by changing only their
import lines: ``config``, ``layers``, ``modeling``, ``structures``, ``data``, ``evaluation``,
``engine``, ``checkpoint``, ``solver``, ``model_zoo`` and ``utils``. Nothing is registered or
imported as a side effect of importing this package.
"""

__version__ = "0.1.0"
