"""The data contract and everything that needs only it: case discovery, safe image and mask loading,
the competition RLE, the TFRecord schema and its one reader, synthetic data, the Beam job, the
dataset report, and the command-line and file plumbing every entry point shares. Imports neither
``trainer`` nor ``serving``."""
