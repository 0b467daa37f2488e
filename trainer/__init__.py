"""Training side: the tf.data input pipeline, augmentation, the model and its layers, losses, the
training run (``python -m trainer.main``) and SavedModel export."""
