"""The model zoo: six Inception families built from one set of blocks."""
from inceptionlab.models.base import FeatureExtractor, InceptionNet, InceptionOutput
from inceptionlab.models.registry import create_model, list_models, model_card, register_model

__all__ = ["create_model", "list_models", "model_card", "register_model", "InceptionNet",
           "InceptionOutput", "FeatureExtractor"]
