"""The array datasets of a study's runs, for the preload of its forkserver (``local.HELD_PRELOAD``), which imports
modules by name: importing this one reads and holds what ``$PEFTLAB_HELD_DATA`` names (``data.held``)."""

from peftlab.study.executors.local import hold_from_environment

hold_from_environment()
