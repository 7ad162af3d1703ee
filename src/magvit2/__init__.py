"""magvit2: turn videos and images into discrete tokens and back (MAGVIT-v2, Open-MAGVIT2)."""

from magvit2.models import TokenizerConfig, VideoTokenizer

__version__ = "0.1.0"
__all__ = ["TokenizerConfig", "VideoTokenizer", "__version__"]
