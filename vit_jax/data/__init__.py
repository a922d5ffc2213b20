"""Input pipeline: sources (tfds, image folders, digits), preprocessing ops, global batches."""
