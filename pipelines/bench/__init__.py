"""Benchmarks behind ``recunlearn bench ...``: each writes JSON, a Markdown table and plots."""
