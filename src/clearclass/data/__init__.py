"""From files to tensors: finding labelled photos, decoding them, batching, augmenting."""
