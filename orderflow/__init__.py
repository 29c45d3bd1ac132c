"""orderflow: an Order -> Payment -> Shipping lifecycle on Temporal, taught through notebooks."""

__version__ = "0.1.0"
