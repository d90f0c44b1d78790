"""textgen's generation stage."""
