"""Client verbs: trigger, runs, tokens, agents (issue 4 fills these in)."""
