"""fastsock build and test tooling: kernel source, patch series, config, build, VM runner."""

__version__ = "0.1.0"
