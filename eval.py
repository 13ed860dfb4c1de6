"""Evaluate a checkpoint: ``python eval.py ckpt_path=RUN/checkpoints/best.ckpt [data=...]``.

The same command as ``clipft-eval`` (installed with the package): both run
:func:`clipft.pipeline.cli.eval_main` on the configs shipped in ``clipft/conf``.
"""

from clipft.pipeline.cli import eval_main

if __name__ == "__main__":
    eval_main()
