"""The pure core: value types, parsers, state machines, rating and credit arithmetic.

Nothing here imports anything but the core itself and pure standard modules (the
numbering plan, ``phonenumbers``, comes in as a function: :mod:`callbackd.numbers`);
nothing opens a file or a socket, reads a clock, draws randomness or touches the
reactor or Redis. ``tests/core/test_purity.py`` checks every module's
syntax tree for it.
"""
