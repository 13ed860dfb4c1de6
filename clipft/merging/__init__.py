"""Weight-space merging of clipft fine-tuning runs: task arithmetic, TIES-merging, Model Stock.

:mod:`clipft.merging.weights` holds the rules on state dicts (with their references),
:mod:`clipft.merging.runs` applies them to runs (file gate, val selection of lambda, checkpoints),
:mod:`clipft.merging.cli` is ``python -m clipft.merging``. An entry point beside :mod:`clipft.soup`.
"""
