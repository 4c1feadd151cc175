"""Callback from IM: the XMPP component and the chat front."""
