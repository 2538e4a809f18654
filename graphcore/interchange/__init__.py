"""Interchange: graphs to and from other formats (standalone Python, ONNX) and the concise builder."""
