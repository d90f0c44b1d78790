"""textgen's data stage."""
