"""Exporting searched designs as a standalone PyTorch module that needs only ``torch``, or as ONNX.

`python -m explorer.export --study NAME (--trial N | --best | --pareto) -o FILE.py` writes the
chosen trials of a study as plain PyTorch, in the manner of torchvision's GoogLeNet: the building
blocks of `standalone` (a ``ConvNormAct`` unit, an ``Inception`` block, the network body), copied
verbatim, then one small class per design whose keyword defaults are the design, so
``Trial12Net()`` builds it as trained and other keywords build variants. With ``--weights`` the
trained state dicts are saved beside the code with a ``load_trialN()`` for each; with ``--format
onnx`` one trained design is written as an ONNX model instead.

Every exported network takes float images in [0, 1] and applies its dataset's normalisation
itself; a ``TRIALn_CFG`` constant beside each class states the input size, mean, std and class
names (as timm's ``pretrained_cfg`` does).

The package: `selection` reads and checks designs from a study, `render` turns them into source
text, `files` writes modules, weights and ONNX files, `cli` is the command line.
"""

from .cli import (
    build_parser,
    main,
)
from .files import (
    export_source,
    export_to_file,
)
from .selection import (
    ExportError,
    export_design,
)

__all__ = [
    "build_parser",
    "ExportError",
    "export_design",
    "export_source",
    "export_to_file",
    "main",
]
