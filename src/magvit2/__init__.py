"""magvit2: turn videos and images into discrete tokens and back (MAGVIT-v2, Open-MAGVIT2)."""

__version__ = "0.1.0"
