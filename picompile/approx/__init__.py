"""TEMPORARY (replaced by the approximation-library merge)."""
