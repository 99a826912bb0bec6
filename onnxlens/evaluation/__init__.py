"""Metrics over (engine, inputs, explanations): faithfulness, sanity, localization, robustness."""
