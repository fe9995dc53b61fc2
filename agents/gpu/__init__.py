"""GPU backends behind one Protocol (``base.GpuBackend``): ``sim`` now, ``nvml`` later."""
