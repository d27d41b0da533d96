"""recunlearn: exact recommendation unlearning on Spark, Delta Lake, Ray and torch.

The library never starts an engine at import time: Spark sessions and Ray connections are
built by ``recunlearn.engines`` when a job asks for them and passed into pipeline steps.
"""

__version__ = "0.1.0"
