"""Entry points: the ``cdb`` command line and the one place that wires the system."""
