"""Test helpers shared by more than one test module: builders, service starters, fault tools."""
