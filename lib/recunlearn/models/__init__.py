"""Sub-models behind one small interface (see ``base.Recommender``)."""
