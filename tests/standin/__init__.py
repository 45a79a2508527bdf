"""Stand-ins for services the monitor probes that cannot be run for real in tests or demos."""
