"""peftlab: parameter-efficient fine-tuning studies of vision transformers."""

__version__ = "0.1.0"
