"""torpor client."""
