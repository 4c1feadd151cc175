"""Tests of the SMS adapter."""
