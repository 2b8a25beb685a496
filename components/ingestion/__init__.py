"""Ingestion: dataset folders read, validated and written as TFRecords of tf.Example."""
