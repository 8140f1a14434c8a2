"""agentsh: run AI coding agents and any command in rootless container sandboxes."""

__version__ = "0.1.0"
