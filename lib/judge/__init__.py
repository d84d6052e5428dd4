"""Stage 04: ToolEval-style judgments (LLM or offline), pass rates, win rates and released runs."""
