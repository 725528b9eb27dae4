"""inceptionlab: the GoogLeNet Inception family in one codebase, and a lab to compare it.

The public names are imported on first use (PEP 562), so that ``import inceptionlab.cli`` does
not import torch: ``inceptionlab --help`` stays fast, and a Ctrl-C while torch loads reaches the
CLI's handler instead of printing a traceback.
"""
from inceptionlab.errors import UserError
from inceptionlab.lazy import lazy_names

__version__ = "0.1.0"
__all__ = ["create_model", "from_pretrained", "list_models", "model_card", "save_pretrained", "InceptionOutput",
           "UserError", "optimize_for_inference", "count_macs", "model_summary", "format_summary",
           "explain_factorization", "__version__"]

# public name -> the module that defines it
_LAZY = {"create_model": "inceptionlab.models", "list_models": "inceptionlab.models",
         "model_card": "inceptionlab.models", "InceptionOutput": "inceptionlab.models",
         "from_pretrained": "inceptionlab.models.weights", "save_pretrained": "inceptionlab.models.weights",
         "optimize_for_inference": "inceptionlab.tools.fast",  # the inference fast path
         # what `inceptionlab summary` prints, for a model in hand
         "count_macs": "inceptionlab.tools.summary", "model_summary": "inceptionlab.tools.summary",
         "format_summary": "inceptionlab.tools.summary", "explain_factorization": "inceptionlab.tools.summary"}


__getattr__, __dir__ = lazy_names(__name__, _LAZY, __all__)
