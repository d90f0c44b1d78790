"""One module per `textgen` sub-command; each stays a thin layer over the library."""
