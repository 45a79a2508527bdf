"""The HTTP road to a target: a client per target (client.py) over a keep-alive transport (transport.py)."""
