"""`textgen serve`: an HTTP API that batches concurrent requests, and its playground page."""
