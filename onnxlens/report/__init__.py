"""HTML, PDF and JSON audit documents rendered from a run's results."""
