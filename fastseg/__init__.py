"""fastseg: verified WebDataset shards, a DALI input pipeline and a Lightning UNet for semantic segmentation."""
from .errors import FastsegError
from .format import Manifest
from .sets import load_manifest

__version__ = "0.1.0"
__all__ = ["FastsegError", "Manifest", "load_manifest", "__version__"]
