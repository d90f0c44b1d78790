"""Paired text for sequence-to-sequence models: source and target strings, read, encoded, batched.

A seq2seq model's ids on either side are its tokenizer's ids moved up by RESERVED, which
leaves the first ids to the marks the model needs and the tokenizers lack: PAD fills a
batch's shorter rows (the loss ignores it), START is the decoder's first input, END the
token it writes when the target is complete.
"""

from __future__ import annotations

PAD, START, END = 0, 1, 2
RESERVED = 3  # ids below this are the marks above; tokenizer id i is model id i + RESERVED
