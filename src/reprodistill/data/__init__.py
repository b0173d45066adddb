"""Data sources, splits, limited-data sampling and per-model preprocessing."""

from reprodistill.data.dataset import ImageDataset
from reprodistill.data.sources import DataBundle, Split, find_medmnist, load_data, read_npz
from reprodistill.data.splits import stratified_split, subsample
from reprodistill.data.transforms import InputSpec, augment, preprocess

__all__ = [
    "DataBundle",
    "ImageDataset",
    "InputSpec",
    "Split",
    "augment",
    "find_medmnist",
    "load_data",
    "preprocess",
    "read_npz",
    "stratified_split",
    "subsample",
]
