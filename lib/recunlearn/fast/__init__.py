"""The fast unlearning tier: approximate updates of a trained model in about a second
(influence functions, fine-tuning, gradient ascent); the model-specific exact updates live
with their models (``models.wmf``, ``models.itemknn``)."""
