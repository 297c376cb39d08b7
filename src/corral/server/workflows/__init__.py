"""Workflows: journaled steps with undo, one workflow per file."""
