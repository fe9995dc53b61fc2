"""The fleet as operators and tenants see it: capacity and offerings, GPU states, node views,
cordon and drain, the site's power."""
