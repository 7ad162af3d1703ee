"""magvit2.models."""
