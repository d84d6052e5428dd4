"""Stage 03: test queries through ReAct / DFSDT with a backend and a tool environment, into
trajectories; the untrained run and the first-step table."""
