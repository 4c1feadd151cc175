"""FastAGI: the server Asterisk hands calls to (``AGI(agi://host:4573/script?query)``)."""
