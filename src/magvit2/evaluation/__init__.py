"""magvit2.evaluation."""
