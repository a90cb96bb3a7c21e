"""Wiring: the CLI, the demo, the pipeline as processes, private services, broker ACLs
and the simulated site. The only package that imports every other one."""
