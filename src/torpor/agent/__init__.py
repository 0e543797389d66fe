"""torpor agent."""
