"""Asterisk Manager Interface: messages, the client protocol and its service."""
