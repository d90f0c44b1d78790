"""textgen's models stage."""
