"""PEFT for the preload of a study's workers (``study.executors.local.PRELOAD``), which imports modules
by name: importing this one imports PEFT without bitsandbytes (``libraries.import_peft``), so that a
worker forked from the forkserver holds bitsandbytes only when its run quantizes its base."""

from peftlab.utils.libraries import import_peft

import_peft()
