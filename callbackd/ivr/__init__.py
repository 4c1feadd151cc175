"""The phone IVR: what callers hear and key, in five languages."""
