"""ds-wizard: DeepSpeed batch sizes done right, and Mamba training that starts."""

__version__ = "0.1.0"
