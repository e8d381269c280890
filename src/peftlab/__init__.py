"""peftlab: parameter-efficient fine-tuning studies of vision transformers."""

__version__ = "0.1.0"

# The methods register their config classes in peftlab.config.methods, the built-ins and the finder of
# plugins: imported here, the registry is filled whatever peftlab module is imported first (timm's models
# register themselves the same way). It imports no torch.
import peftlab.tuners.plugins  # noqa: F401
