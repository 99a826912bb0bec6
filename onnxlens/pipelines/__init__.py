"""Prefect tasks and flows that chain explain → evaluate → report."""
