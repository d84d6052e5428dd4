"""toolsft-repro: the importable code behind the notebooks (see README.md)."""
