"""torpor sdk."""
