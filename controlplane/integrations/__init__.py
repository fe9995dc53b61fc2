"""Clients of things outside the control plane that it drives over a network. Never called
inside a unit of work (CONVENTIONS: no network call inside a database transaction)."""
