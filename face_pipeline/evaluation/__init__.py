"""Measuring the product: labelled data sets, metrics, the simple anchors and the quality protocol.

Nothing in the running product imports this package; benchmarks, ``face-pipeline evaluate`` and tests do.
"""
