"""magvit2.training."""
