"""LightningDataModules: one per dataset layout, all sharing :class:`ImageClassificationDataModule`."""

from clipft import registry
from clipft.data.base import DatasetIndex, ImageClassificationDataModule, ImageDataset, Sample
from clipft.data.benchmarks import CoOpDataModule, DigitsDataModule, ImageNetVariantDataModule, RESISC45DataModule
from clipft.data.cache import CachedImageDataset, DecodedImageCache
from clipft.data.folder import FolderDataModule
from clipft.data.gtsrb import GTSRB_CLASSES, GTSRBDataModule
from clipft.data.stats import compute_mean_std
from clipft.data.synthetic_signs import SyntheticSignsDataModule, generate_synthetic_signs
from clipft.data.traffic_signs import TrafficSignsDataModule

# clipft's datamodules (kind "datamodule"): what a run's config.yaml may name (clipft.pipeline.run_data)
for _cls in (
    FolderDataModule, GTSRBDataModule, SyntheticSignsDataModule, TrafficSignsDataModule,
    CoOpDataModule, DigitsDataModule, ImageNetVariantDataModule, RESISC45DataModule,
):
    registry.register("datamodule", _cls)
registry.register_path("datamodule", "clipft.data.streaming.StreamingDataModule")  # imported when used

__all__ = [
    "GTSRB_CLASSES",
    "CachedImageDataset",
    "CoOpDataModule",
    "DatasetIndex",
    "DecodedImageCache",
    "DigitsDataModule",
    "FolderDataModule",
    "GTSRBDataModule",
    "ImageClassificationDataModule",
    "ImageDataset",
    "ImageNetVariantDataModule",
    "RESISC45DataModule",
    "Sample",
    "SyntheticSignsDataModule",
    "TrafficSignsDataModule",
    "compute_mean_std",
    "generate_synthetic_signs",
]
