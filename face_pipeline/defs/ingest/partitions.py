"""Photo batches are dynamic partitions: the inbox sensor and the CLI add one per folder."""

import dagster as dg

photo_batches = dg.DynamicPartitionsDefinition(name="photo_batches")
