"""Miner drivers: the ASIC fleet over the cgminer-family JSON API on TCP 4028 (stock cgminer
reads, LuxOS ``curtail sleep|wakeup`` and profiles, Braiins OS pause/resume). Empty until the
dispatcher of issue 12 drives miners; its drivers live here, outside every unit of work."""
