"""Review: what people decide about standards — each standard's workflow status and judgment (and,
with the mapping engine, the suggestions they accept or reject, the matrix and the gaps)."""
