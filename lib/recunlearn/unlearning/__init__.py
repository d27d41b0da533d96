"""Unlearning: what a batch of requests deletes (``targets``), the methods that update a model
version without it (``methods``), and when the exact tier is due after approximate answers
(``policy``)."""
