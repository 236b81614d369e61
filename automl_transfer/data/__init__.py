"""Images and datasets: reading, checking, decoding once, caching, and cutting batches on the device."""
