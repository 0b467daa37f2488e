"""Data side: case discovery, safe image/mask loading, synthetic data, TFRecord schema, the Beam job."""
