"""magvit2.modules."""
