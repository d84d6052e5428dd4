"""toolsft-repro: the importable code behind the notebooks, one package per stage and concern.

Packages, in the order imports flow (a package imports only those before it):
common, toolbench, models, checks, data (01), train (02), infer (03), judge (04), report (05), pipeline.
Heavy libraries (torch, transformers, trl, datasets, peft, matplotlib, pandas, openai, papermill) are
imported inside the functions that need them: each takes seconds, and the runner, the pre-flight
and most tests never need them.
"""
