"""What every stage shares: the profile (config), append-only files and locks (store), statistics,
progress lines, tables, plots, API keys, the paper's stated facts and the GGUF weights cache."""
