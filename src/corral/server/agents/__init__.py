"""Talking to host agents: tasks with ids and callbacks, attach, facts."""
