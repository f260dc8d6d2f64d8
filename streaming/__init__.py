"""Kafka topics, events, the stream feature processor and its state (see README "Streaming")."""

import warnings

# kafka-python loads its protocol schemas at import through importlib.resources.read_text, which
# warns (DeprecationWarning). Those are hidden by default, but Feast's import turns on
# DeprecationWarnings for the whole process; kafka imported after it printed two notices into
# every benchmark's and tool's output. Imported here, first and quietly, it never warns later.
with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import kafka  # noqa: F401
