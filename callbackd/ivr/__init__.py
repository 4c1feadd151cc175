"""The phone callback: the FastAGI IVR's flows, what callers hear and key in five
languages, and their wiring (docs/ivr.rst)."""
