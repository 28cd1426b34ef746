"""Dataset-scale inference: the streaming engine, output writers and the collection captioner."""
