"""tfds."""
