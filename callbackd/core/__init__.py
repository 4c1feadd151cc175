"""The pure core: value types, parsers, state machines, rating and credit arithmetic.

Nothing here imports anything but the core itself, pure standard modules and
``phonenumbers``; nothing opens a file or a socket, reads a clock, draws randomness or
touches the reactor or Redis. ``tests/core/test_purity.py`` checks every module's
syntax tree for it.
"""
