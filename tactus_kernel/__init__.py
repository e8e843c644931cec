"""The Tactus kernel: durable, human-in-the-loop Lua procedures in Jupyter."""

__version__ = "0.1.0"


def _jupyter_labextension_paths() -> list[dict[str, str]]:
    """Where the built lab extension lives (for ``jupyter labextension develop``)."""
    return [{"src": "labextension", "dest": "tactus-kernel-labextension"}]
