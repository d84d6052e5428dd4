"""Stage 01: ToolBench records -> SFT examples, splits and the dataset on disk."""
