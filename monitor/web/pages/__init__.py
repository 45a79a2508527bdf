"""The status page, the probe page and the badges: server-rendered HTML and SVG, no JavaScript."""
