"""What reaches the terminal: the one escaper of text the command prints from outside its code.

It is defined in ``peftlab.utils.files`` so that every layer that prints (a study's progress, the analysis'
warnings) reaches the same one; the commands import it from here.
"""

from peftlab.utils.files import BIDI_CONTROLS, printable

__all__ = ["BIDI_CONTROLS", "printable"]
