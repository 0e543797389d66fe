"""torpor coordinator."""
