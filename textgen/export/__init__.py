"""Export: a trained model in formats that run without textgen (docs/deploy.md).

- `saved_model`: a TensorFlow SavedModel that takes strings and returns strings, with the
  tokenizer and the whole sampling loop inside its graph (textgen.export.saved_model);
- `tflite`: a LiteRT step model in a zip with the vocabulary, the model card and a short
  loop that runs it without TensorFlow (textgen.export.tflite).
"""

FORMATS = ("saved_model", "tflite")
