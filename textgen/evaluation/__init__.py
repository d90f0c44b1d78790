"""textgen's evaluation stage."""
