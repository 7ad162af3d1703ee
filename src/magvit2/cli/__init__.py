"""magvit2.cli."""
