"""The datasets CLIP-adaptation papers report on, read from the layouts their users already have.

CoOp's 11 few-shot datasets (:mod:`.coop`), the ImageNet evaluation variants (:mod:`.imagenet_variants`),
the 8-task merging suite's RESISC45, SVHN and MNIST (:mod:`.merging`), and each dataset's prompt
templates and CLIP class names (:mod:`.templates`). docs/benchmarks.md lists the configs and layouts.
"""

from clipft.data.benchmarks.catalog import COOP_DATASETS, IMAGENET_VARIANTS, BenchmarkSpec, VariantSpec
from clipft.data.benchmarks.coop import CoOpDataModule
from clipft.data.benchmarks.imagenet_variants import ImageNetVariantDataModule
from clipft.data.benchmarks.merging import DigitsDataModule, RESISC45DataModule
from clipft.data.benchmarks.readers import read_split_json
from clipft.data.benchmarks.templates import benchmark_names, clip_class_names, dataset_templates

__all__ = [
    "COOP_DATASETS",
    "IMAGENET_VARIANTS",
    "BenchmarkSpec",
    "CoOpDataModule",
    "DigitsDataModule",
    "ImageNetVariantDataModule",
    "RESISC45DataModule",
    "VariantSpec",
    "benchmark_names",
    "clip_class_names",
    "dataset_templates",
    "read_split_json",
]
