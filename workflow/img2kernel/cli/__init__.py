"""The ``img2kernel`` command line: ``fit``, ``apply`` and ``bench``."""
