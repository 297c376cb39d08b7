"""Corral: a KVM virtualization management platform."""
