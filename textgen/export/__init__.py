"""Exporting a textgen model for use without textgen: TensorFlow SavedModel and LiteRT."""
