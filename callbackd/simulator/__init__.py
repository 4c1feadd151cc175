"""A simulated Asterisk 22 (AMI server) for tests, demos and the daemon's simulated mode."""

from callbackd.simulator.asterisk import SimulatedAsterisk
from callbackd.simulator.protocol import AMIServerFactory, AMIServerProtocol
from callbackd.simulator.rules import Behaviour, Rule, RuleError, RuleSet, parse_rule, parse_rules
from callbackd.simulator.service import SimulatorService

__all__ = [
    "AMIServerFactory",
    "AMIServerProtocol",
    "Behaviour",
    "Rule",
    "RuleError",
    "RuleSet",
    "SimulatedAsterisk",
    "SimulatorService",
    "parse_rule",
    "parse_rules",
]
