"""Evaluate a checkpoint: ``python eval.py ckpt_path=RUN/checkpoints/best.ckpt [data=...]``."""

import hydra
from omegaconf import DictConfig


@hydra.main(version_base="1.3", config_path="clipft/conf", config_name="eval")
def main(cfg: DictConfig) -> None:
    from clipft.pipeline.cli import eval_entry

    return eval_entry(cfg)


if __name__ == "__main__":
    main()
