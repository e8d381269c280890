"""peftlab: parameter-efficient fine-tuning studies of vision transformers."""

__version__ = "0.1.0"

# First, before anything heavy: the command's Ctrl-C waits for the command to take it (utils/startup.py).
from peftlab.utils.startup import hold_stops_for_the_command

hold_stops_for_the_command()

# The methods register their config classes in peftlab.config.methods, the built-ins and the finder of
# plugins: imported here, the registry is filled whatever peftlab module is imported first (timm's models
# register themselves the same way). It imports no torch.
import peftlab.tuners.plugins  # noqa: E402, F401
