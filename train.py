"""Train a model: ``python train.py [experiment=NAME] [group=option] [key=value ...]``.

The same command as ``clipft-train`` (installed with the package): both run
:func:`clipft.pipeline.cli.train_main` on the configs shipped in ``clipft/conf``.
"""

from clipft.pipeline.cli import train_main

if __name__ == "__main__":
    train_main()
