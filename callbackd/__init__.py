"""callbackd: a telecom callback daemon on Twisted."""

__version__ = "0.1.0"
