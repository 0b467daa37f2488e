"""Training side: tf.data input pipeline, model layers, the dual-stream U-Net, trainer.main, export."""
