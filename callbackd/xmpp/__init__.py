"""The chat front: an XMPP server component (XEP-0114) that users chat with.

The daemon connects to an XMPP server (Prosody, ejabberd) as the component of its
own domain (``[xmpp] domain``, e.g. ``callback.example.org``); every stanza sent
to that domain or to an address in it reaches the daemon. Modules:

- :mod:`callbackd.xmpp.component`: the connection, its back-off and its health;
- :mod:`callbackd.xmpp.handlers`: service discovery, version, ping, presence and
  the message front, on :class:`wokkel.subprotocols.XMPPHandler`;
- :mod:`callbackd.xmpp.chat`: the chat front (commands to the engine, replies and
  progress in the account's language), independent of the transport;
- :mod:`callbackd.xmpp.service`: the component, its handlers and the chat front
  put together from ``[xmpp]`` (a child of the daemon's service tree).

wokkel is written for old Twisted: its modules import names that Twisted
deprecated (DeprecationWarning at import), and its disco, ping and version
modules no longer import at all, hence handlers of our own. The warnings of
wokkel's modules (and only theirs) are filtered here, before any of them is
imported; pytest's configuration filters them the same way.
"""

from __future__ import annotations

import warnings

warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"wokkel(\..*)?$")
