"""Builds TFDS datasets without leaving stray temp dirs behind."""

from __future__ import annotations

import contextlib
import shutil
import tempfile


@contextlib.contextmanager
def contained_tempdirs():
    """Temp dirs made inside go to one scratch dir that is deleted on exit.

    Why: TFDS's DatasetInfo.initialize_from_bucket makes an empty `mkdtemp("tfds")` for every new builder (it looks
    for the dataset's metadata on GCS, unreachable here) and never removes it, so each dataset build left one
    `/tmp/tmp*tfds`. tempfile.tempdir is process-wide: do not build datasets from several threads at once.
    """
    previous = tempfile.tempdir
    scratch = tempfile.mkdtemp(prefix="paperclub_tfds_")
    tempfile.tempdir = scratch
    try:
        yield scratch
    finally:
        tempfile.tempdir = previous
        shutil.rmtree(scratch, ignore_errors=True)
