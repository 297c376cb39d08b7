"""Open vSwitch flow computation shared by the server (the controller) and the host agents: pure
functions, no I/O."""
