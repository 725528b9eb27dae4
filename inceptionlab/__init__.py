"""inceptionlab: the GoogLeNet Inception family in one codebase, and a lab to compare it."""
from inceptionlab.errors import UserError
from inceptionlab.models import InceptionOutput, create_model, list_models, model_card
from inceptionlab.models.weights import from_pretrained
from inceptionlab.tools.fast import optimize_for_inference  # noqa: F401 - the inference fast path

__version__ = "0.1.0"
__all__ = ["create_model", "from_pretrained", "list_models", "model_card", "InceptionOutput", "UserError", "__version__"]
