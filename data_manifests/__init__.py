"""What a corpus is: native-layout parsers, label maps, the manifest schema.

``__version__`` is the version of the fs distribution (setup.cfg reads it here): it lives on the
lowest floor so that every package can record it without importing upward.
"""

__version__ = "0.1.0"
