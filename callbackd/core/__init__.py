"""The pure core: value types, parsers, state machines, rating and credit arithmetic.

Nothing here imports ``twisted.internet``, reads a clock or touches Redis.
"""
