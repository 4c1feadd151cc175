"""State that must survive a restart: the store interface and its implementations."""
