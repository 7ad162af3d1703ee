"""magvit2.losses."""
