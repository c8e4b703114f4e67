"""Data: read a data set once into uint8 images, split it, and serve batches from the training device.

``sources`` reads each data set (``decode`` one file), ``images`` holds the images (in memory or as files),
``cache`` keeps decoded sets on disk, ``build`` conforms, splits and makes the loaders: ``loader`` (in memory)
and ``stream`` (files) share the ``sampler`` and the batched ``augment`` ops.
"""

from cnnbench.data.build import dataset_summary, load_data, make_loaders, normalization
from cnnbench.data.bundle import DataBundle
from cnnbench.data.images import FileImageSet, ImageSet
from cnnbench.data.loader import DeviceLoader

__all__ = ["DataBundle", "DeviceLoader", "FileImageSet", "ImageSet", "dataset_summary", "load_data",
           "make_loaders", "normalization"]
