"""Callback from SMS: gateways in and out, commands, durable replies."""
