"""Chaos testing: operation histories, fault scenarios and the checkers that judge them."""
