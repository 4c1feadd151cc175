"""twistd plugin: ``twistd callbackd -c callbackd.ini`` (the real code is in callbackd.tap)."""

from twisted.application.service import ServiceMaker

callbackd = ServiceMaker(
    "callbackd",
    "callbackd.tap",
    "Telecom callback daemon: chat, SMS, web, REST and IVR triggered callbacks over Asterisk",
    "callbackd",
)
