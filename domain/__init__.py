"""Pure, deterministic core of Claire de Binare.

Nothing in this package performs I/O, reads a clock, draws unseeded random numbers or
depends on message timing. Everything here can be unit-tested without a broker, a database
or an event loop.
"""
