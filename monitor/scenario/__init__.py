"""The plug-in machinery: base types a scenario is made of, the runner, the registry. It names no kind."""
