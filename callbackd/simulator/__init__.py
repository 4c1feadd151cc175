"""A simulated Asterisk 22 (AMI server) for tests, demos and the daemon's simulated mode."""

from callbackd.simulator.agi import AGICall, SimulatedFastAGI, SoundLibrary
from callbackd.simulator.asterisk import SimulatedAsterisk
from callbackd.simulator.caller import CallerStep, ScriptedCaller
from callbackd.simulator.protocol import AMIServerFactory, AMIServerProtocol
from callbackd.simulator.rules import Behaviour, Rule, RuleError, RuleSet, parse_rule, parse_rules
from callbackd.simulator.service import SimulatorService

__all__ = [
    "AGICall",
    "AMIServerFactory",
    "AMIServerProtocol",
    "Behaviour",
    "CallerStep",
    "Rule",
    "RuleError",
    "RuleSet",
    "ScriptedCaller",
    "SimulatedAsterisk",
    "SimulatedFastAGI",
    "SimulatorService",
    "SoundLibrary",
    "parse_rule",
    "parse_rules",
]
