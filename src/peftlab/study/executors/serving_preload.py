"""The last preload of a study's forkserver (``local.SERVING_PRELOAD``): from here on the server ignores SIGINT, as
CPython's forkserver does once its preload is done, so that the study can read in /proc that its imports are over
(``local.await_server``). SIGINT is still blocked here (``local.start_forkserver``); one held back is dropped, as the
server drops it anyway. A worker takes its own handler (``worker.take_interrupts``)."""

import signal

signal.signal(signal.SIGINT, signal.SIG_IGN)
