"""Wire formats: each protocol's requests read into typed requests, and its answers written back.

Validation here words its errors as the hosted service does; nothing below this layer sees a wire shape.
"""
