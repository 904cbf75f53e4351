"""The HTTP service, the CLI and the scanner page."""
