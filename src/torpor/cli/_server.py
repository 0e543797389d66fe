"""Server verbs: coordinator, migrate (issue 4 fills these in)."""
