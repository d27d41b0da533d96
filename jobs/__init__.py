"""Thin entry points: parse arguments, build the engines, call one pipeline, exit code."""
