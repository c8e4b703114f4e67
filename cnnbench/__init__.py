"""cnnbench: train, compare and inspect convolutional neural networks."""

__version__ = "0.1.0"
