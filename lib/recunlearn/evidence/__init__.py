"""Evidence: evaluation of a model version, completeness and membership-inference checks of
an unlearning, fairness gaps, and the storage scans the audit runs."""
