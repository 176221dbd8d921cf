"""Graph passes: each small, named for what it does, leaving the graph valid."""
