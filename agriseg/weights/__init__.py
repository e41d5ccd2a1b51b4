"""The shipped models: weights, metadata and ONNX files (package data). Imports nothing."""
