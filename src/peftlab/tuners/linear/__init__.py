from peftlab.tuners.linear.model import apply_linear

__all__ = ["apply_linear"]
