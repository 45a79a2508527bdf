"""The daemon's own HTTP server: endpoints, the exporter-toolkit web configuration (TLS, basic auth)."""
