"""Model training and export (imports torch; the runtime never imports this package)."""

import logging
import warnings

# FBGEMM's CPU build announces optional GPU/SSD kernels it lacks and deprecated
# module paths TorchRec still imports; none of them matter for CPU training.
warnings.filterwarnings("ignore", message=r"[\s\S]*Failed to import", category=UserWarning)
warnings.filterwarnings("ignore", message=r"[\s\S]*DEPRECATED", category=DeprecationWarning)
warnings.filterwarnings("ignore", message=r"[\s\S]*legacy TorchScript-based ONNX export")
logging.getLogger("torchrec.distributed.planner").setLevel(logging.ERROR)
logging.getLogger("torchrec.distributed.utils").setLevel(logging.ERROR)
