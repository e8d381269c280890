from peftlab.tuners.full.model import apply_full

__all__ = ["apply_full"]
