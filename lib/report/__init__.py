"""Stage 05: the paper's tables and figures, the claim audit, judge calibration and contamination."""
