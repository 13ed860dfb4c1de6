"""Train a model: ``python train.py [experiment=NAME] [group=option] [key=value ...]``."""

import hydra
from omegaconf import DictConfig


@hydra.main(version_base="1.3", config_path="clipft/conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    from clipft.pipeline.cli import train_entry

    return train_entry(cfg)


if __name__ == "__main__":
    main()
