"""The daemon's own alerting: a pure state machine (engine), a state file, and
notifiers driven off the probe path (dispatcher), wired together by `AlertSink`."""
