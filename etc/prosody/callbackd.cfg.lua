-- callbackd's chat front as a Prosody component (XEP-0114).
--
-- Copy this file to /etc/prosody/conf.d/callbackd.cfg.lua (Debian's prosody.cfg.lua
-- includes that directory), replace the domain and the secret, then run
-- prosodyctl reload. callbackd's side is the [xmpp] section of its config:
--
--   [xmpp]
--   enabled = yes
--   domain = callback.example.org
--   host = 127.0.0.1
--   port = 5347
--   secret_file = /etc/callbackd/xmpp.secret
--
-- The secret is the same string on both sides; make one with
--   openssl rand -hex 24 > /etc/callbackd/xmpp.secret
-- and keep this file as private as that one (chmod 640, group prosody).
--
-- Prosody listens for components on 127.0.0.1 port 5347 by default. To change
-- that, set these in the global part of prosody.cfg.lua, above every VirtualHost
-- (prosodyctl check config says so when they are in the wrong place):
--   component_ports = { 5347 }
--   component_interfaces = { "127.0.0.1" }
--
-- Users of this server chat with callback.example.org at once; users of other
-- servers reach it over server-to-server links once it has a DNS record.

Component "callback.example.org"
    component_secret = "CHANGE-ME"
