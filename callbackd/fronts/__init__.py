"""What every user-facing front shares: the chat, SMS, web and IVR fronts use it alike.

A front is an adapter (``callbackd/xmpp``, ``callbackd/sms``, ``callbackd/web``,
``callbackd/ivr``): it talks to the engine's public API, the store and the session
events, never to another front. What two of them need is kept here instead:

- :mod:`callbackd.fronts.commands`: the chat grammar's commands answered for an
  account, in its language (the chat front adds ``LINK``/``UNLINK``; the SMS front
  answers ``BALANCE``, ``STATUS``, ``HISTORY``, ``RATE`` and ``LANG`` with it);
- :mod:`callbackd.fronts.progress`: a front's session events and the end of its
  reactor turn, where the texts of one turn go out together, and the events of a
  session started in this turn, kept until its starter learns the session id;
- :mod:`callbackd.fronts.throttle`: at most so many hits per key within a window;
- :mod:`callbackd.fronts.codes`: the one-time code that verifies a caller ID (sent by
  SMS from the SMS front and from the web portal).

``tests/test_layers.py`` keeps the fronts apart.
"""
