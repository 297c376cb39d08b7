"""Domain XML builders: one small typed class per libvirt element, composed by ``compose``."""
