"""pprl: privacy-preserving record linkage and encrypted score sharing."""

from pprl.errors import PPRLError

__version__ = "0.1.0"
__all__ = ["PPRLError", "__version__"]
