"""Model training and export (imports torch; the runtime never imports this package)."""

import logging
import warnings

# FBGEMM's CPU build announces optional GPU/SSD kernels it lacks and deprecated
# module paths TorchRec still imports; none of them matter for CPU training.
warnings.filterwarnings("ignore", message=r"[\s\S]*Failed to import")  # a UserWarning or a DeprecationWarning
warnings.filterwarnings("ignore", message=r"[\s\S]*DEPRECATED", category=DeprecationWarning)
warnings.filterwarnings("ignore", message=r"[\s\S]*legacy TorchScript-based ONNX export")
warnings.filterwarnings("ignore", message="The feature will be removed. Please remove usage of this function")
# TorchRec's own deprecation notices about the planner and DDP arguments it passes itself.
warnings.filterwarnings("ignore", message="HeuristicalStorageReservation is known", category=FutureWarning)
warnings.filterwarnings("ignore", message="`broadcast_buffers` is deprecated", category=FutureWarning)
warnings.filterwarnings("ignore", message="Please use DTensor instead", category=FutureWarning)
# ONNX export traces the fixed dense-width check of models/common.py (a model's dense width never
# changes, so the traced branch is the only one); torch warns about any such Python-level branch.
warnings.filterwarnings("ignore", message="Converting a tensor to a Python boolean might cause the trace")
# The trainer overwrites its own `last/` checkpoint on purpose, every epoch.
warnings.filterwarnings("ignore", message="Detected an existing checkpoint in", category=UserWarning)
logging.getLogger("torch.fx._symbolic_trace").setLevel(logging.ERROR)  # is_fx_tracing notice, once per run
logging.getLogger("torchrec.distributed.planner").setLevel(logging.ERROR)
logging.getLogger("torchrec.distributed.utils").setLevel(logging.ERROR)
