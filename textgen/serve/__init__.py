"""textgen serve: an HTTP API whose concurrent requests run as one batch, and a web playground."""
