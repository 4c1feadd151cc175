-- callbackd's chat front as a Prosody component (XEP-0114).
--
-- Add these lines to /etc/prosody/prosody.cfg.lua (the global part for the
-- listener, the Component line after the VirtualHost of your users), or put this
-- file into /etc/prosody/conf.d/, then: prosodyctl reload (or restart).
-- callbackd's side is the [xmpp] section of its config:
--
--   [xmpp]
--   enabled = yes
--   domain = callback.example.org
--   host = 127.0.0.1
--   port = 5347
--   secret_file = /etc/callbackd/xmpp.secret
--
-- The secret is the same string on both sides: make one with
--   openssl rand -hex 24 > /etc/callbackd/xmpp.secret
-- and keep it out of world-readable files (this one included, when it holds it).

-- the component listener: loopback only when callbackd runs on the same machine
component_ports = { 5347 }
component_interfaces = { "127.0.0.1" }

-- users chat with callback.example.org; it needs a DNS name (an SRV or A record)
-- only if users of other servers are to reach it over server-to-server links.
Component "callback.example.org"
    component_secret = "CHANGE-ME: the contents of /etc/callbackd/xmpp.secret"
