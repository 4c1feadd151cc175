"""The phone callback: the FastAGI IVR's flows and their wiring (docs/ivr.rst)."""
