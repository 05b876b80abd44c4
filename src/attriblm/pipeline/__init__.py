"""End-to-end stages over the library: attribute, evaluate, the demo. The CLI wraps these."""
