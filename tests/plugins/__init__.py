"""Example scenario plug-ins used by tests (not part of the shipped package)."""
