"""mixinr: many images, one small network (a mixture-of-weights SIREN image codec)."""

from mixinr.errors import MixinrError

__version__ = "0.1.0"
__all__ = ["MixinrError", "__version__"]
