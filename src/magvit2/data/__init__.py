"""magvit2.data."""
