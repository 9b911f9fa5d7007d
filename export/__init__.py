"""Deployment export of the CLID snapshot ensemble."""
