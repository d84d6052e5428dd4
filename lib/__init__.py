"""toolsft-repro: the importable code behind the notebooks (see README.md, "Where things are").

Imports: every lib module is imported at the top of the module that uses it, and they flow one way
(leaves such as config, store and toolbench at the bottom, the stages above, lib.run on top). The
heavy libraries (torch, transformers, datasets, trl, peft, matplotlib, pandas, openai, papermill) are
imported inside the functions that need them, because each takes seconds and the runner, the
pre-flight and most tests never do.
"""
