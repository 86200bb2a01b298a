"""Post-processing: the ordered chain of image steps a client's recipe configures."""
