"""Deterministic rules on model output: the first-step criteria, trajectory checks, grounding of
values in the query, the offline judge and the stage-02 format check."""
