"""textgen's training stage."""
