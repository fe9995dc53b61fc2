"""How the agent runs tenant workloads on its GPUs (processes now, containers where an engine exists)."""
