"""fastff: fast feedforward networks (Belcak & Wattenhofer, 2023) and the pipeline around them."""

__version__ = "0.1.0"
